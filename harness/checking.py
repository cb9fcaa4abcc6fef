"""Equivalence checking of an implementation against the float64 rep-merged reference.

Two modes:

- ``exact``: inputs and weights are small integers, so every partial sum is an integer far
  below 2**24 and float32 arithmetic is exact in any order. The implementation must match the
  float64 reference bit for bit (the case is refused if its magnitudes could reach 2**24).
- ``float``: standard normal data; every element must lie within ``harness.error_bound``
  (a worst-case rounding bound, per element) of the float64 reference.

In both modes the weights of pruned kernels are NaN (they must not reach the output), the
inputs are compared bit for bit before and after the call (no mutation), and, for
implementations that declare autograd, the gradients of x and weight for integer upstream
gradients must match the reference's bit for bit (exact integer arithmetic again).
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.cases import Case
from harness.reference import Branches, error_bound, reference_forward
from harness.registry import DEFAULT_IMPLS_DIR, Implementation

MODES = ("exact", "float")
LAYOUTS = ("contiguous", "strided", "channels_last")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Largest magnitude below which every integer is exact in each dtype.
_EXACT_LIMIT = {torch.float32: 2.0**24, torch.float64: 2.0**53}


@dataclass(frozen=True)
class CheckCase:
    """A case plus how its inputs are made: dtype, mode, memory layout, device."""

    case: Case
    dtype: str = "float32"
    mode: str = "exact"
    layout: str = "contiguous"
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name, allowed in (("dtype", tuple(DTYPES)), ("mode", MODES), ("layout", LAYOUTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        torch.device(self.device)  # raises on a malformed device string

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_args(self) -> str:
        """``key=value`` pairs that ``CheckCase.parse`` reads back: the reproducer's case."""
        values = {**dataclasses.asdict(self.case), **dataclasses.asdict(self)}
        del values["case"], values["suite"], values["tier"]
        return " ".join(f"{key}={value}" for key, value in values.items())

    @classmethod
    def parse(cls, text: str) -> CheckCase:
        """Read ``key=value`` pairs (``to_args``'s format); types follow the dataclass fields."""
        values: dict[str, str] = {}
        for token in shlex.split(text):
            key, sep, value = token.partition("=")
            if not sep:
                raise ValueError(f"case string: expected key=value, got {token!r}")
            values[key] = value
        own = {f.name for f in dataclasses.fields(cls)} - {"case"}
        case_fields = {f.name: f for f in dataclasses.fields(Case) if f.name not in ("suite", "tier")}
        unknown = set(values) - own - set(case_fields)
        if unknown:
            raise ValueError(f"case string: unknown keys {sorted(unknown)}; known: {sorted(own | set(case_fields))}")
        converters = {"int": int, "float": float, "str": str}
        case_values = {}
        for key, value in values.items():
            if key in case_fields:
                kind = case_fields[key].type
                try:
                    case_values[key] = converters[kind](value)
                except ValueError:
                    raise ValueError(f"case string: {key} must be {kind}, got {value!r}") from None
        case_values.setdefault("name", "cli")
        return cls(Case(**case_values), **{key: values[key] for key in own if key in values})


@dataclass(frozen=True)
class Failure:
    kind: str  # "error", "mutated-input", "values", "gradient"
    message: str


@dataclass(frozen=True)
class CheckResult:
    implementation: str
    check: CheckCase
    failures: tuple[Failure, ...] = ()
    skipped: str | None = None
    #: folder the implementation was discovered in, when not the project's impls/
    impls_dir: Path | None = None

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.failures

    @property
    def reproducer(self) -> str:
        folder = f"--impls-dir {shlex.quote(str(self.impls_dir))} " if self.impls_dir else ""
        return f"swbench {folder}check --impl {self.implementation} --case {shlex.quote(self.check.to_args())}"

    def report(self) -> str:
        if self.skipped:
            return f"{self.implementation}: skipped ({self.skipped})"
        if self.passed:
            return f"{self.implementation}: passed [{self.check.to_args()}]"
        lines = [f"{self.implementation} does not match the reference. Reproduce with:", f"  {self.reproducer}"]
        lines += [f"  [{failure.kind}] {failure.message}" for failure in self.failures]
        return "\n".join(lines)


class MismatchError(AssertionError):
    """Raised by ``assert_matches_reference``; its message is ``CheckResult.report()``."""

    def __init__(self, result: CheckResult):
        super().__init__(result.report())
        self.result = result


@dataclass
class _Inputs:
    x: torch.Tensor
    weight: torch.Tensor
    upstream: Branches | None = field(default=None)


def make_inputs(check: CheckCase, *, nan_pruned: bool) -> _Inputs:
    """Seeded inputs in the case's dtype, layout and device (drawn on the CPU in float64)."""
    case, spec = check.case, check.case.spec()
    generator = torch.Generator().manual_seed(case.seed)
    if check.mode == "exact":
        x = torch.randint(-3, 4, case.input_shape, generator=generator).double()
        weight = torch.randint(-2, 3, spec.weight_shape, generator=generator).double()
        upstream = Branches(*(torch.randint(-2, 3, case.input_shape, generator=generator).double() for _ in "hvi"))
    else:
        x = torch.randn(case.input_shape, generator=generator, dtype=torch.float64)
        weight = torch.randn(spec.weight_shape, generator=generator, dtype=torch.float64)
        upstream = None
    if nan_pruned:
        weight.view(spec.channels, spec.nk, -1)[torch.as_tensor(~spec.active)] = float("nan")
    x, weight = (_laid_out(t.to(check.torch_dtype), check.layout).to(check.device) for t in (x, weight))
    if upstream is not None:
        upstream = Branches(*(u.to(dtype=check.torch_dtype, device=check.device) for u in upstream))
    return _Inputs(x, weight, upstream)


def _laid_out(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "strided":  # every other element of a twice-as-wide buffer
        wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype)
        wide[..., ::2] = tensor
        return wide[..., ::2]
    if layout == "channels_last":
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor.contiguous()


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and the same bits in every element (NaN == NaN, -0.0 != 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))


def check(impl: Implementation, check_case: CheckCase, *, gradients: bool = True) -> CheckResult:
    """Run ``impl`` on ``check_case`` and compare with the reference; never raises for the
    implementation's own errors (they are recorded as failures)."""
    folder = impl.source.parent if impl.source and impl.source.parent != DEFAULT_IMPLS_DIR else None
    reason = impl.unavailable_reason(check_case.device)
    if reason is None and check_case.torch_dtype not in impl.dtypes:
        reason = f"does not support {check_case.dtype}"
    if reason is not None:
        return CheckResult(impl.name, check_case, skipped=reason, impls_dir=folder)
    spec = check_case.case.spec()
    failures = _check_forward(impl, check_case, spec)
    if gradients and impl.autograd and not failures:
        failures += _check_gradients(impl, check_case, spec)
    return CheckResult(impl.name, check_case, tuple(failures), impls_dir=folder)


class CheckSkipped(Exception):
    """Raised by ``assert_matches_reference`` when the check could not run (the reason is the
    message), so a caller can never take a skipped check for a passed one."""


def assert_matches_reference(impl: Implementation, check_case: CheckCase) -> None:
    result = check(impl, check_case)
    if result.skipped:
        raise CheckSkipped(f"{impl.name}: {result.skipped}")
    if result.failures:
        raise MismatchError(result)


def _check_forward(impl: Implementation, check_case: CheckCase, spec) -> list[Failure]:
    inputs = make_inputs(check_case, nan_pruned=True)
    x64, w64 = inputs.x.double(), inputs.weight.double()
    expected = reference_forward(x64, w64, spec)
    if check_case.mode == "exact":
        _require_exact_case(x64, w64, spec, check_case)
        tolerance = None
    else:
        tolerance = error_bound(x64, w64, spec, check_case.torch_dtype)
    before = (inputs.x.clone(), inputs.weight.clone())
    try:
        with torch.no_grad():
            got = impl(inputs.x, inputs.weight, spec)
    except Exception as error:  # an implementation's crash is a finding, recorded with its type
        return [Failure("error", f"{type(error).__name__}: {error}")]
    failures = []
    for label, original, now in (("x", before[0], inputs.x), ("weight", before[1], inputs.weight)):
        if not bitwise_equal(original, now):
            failures.append(Failure("mutated-input", f"the implementation modified its input {label}"))
    for branch, out, ref, bound in zip("hvi", got, expected, tolerance or (None,) * 3):
        message = describe_mismatch(out, ref, bound, check_case.torch_dtype)
        if message:
            failures.append(Failure("values", f"branch {branch}: {message}"))
    return failures


def describe_mismatch(
    got: torch.Tensor, expected64: torch.Tensor, bound: torch.Tensor | None, dtype: torch.dtype
) -> str | None:
    """None if ``got`` matches; else the count of bad elements and the worst one.

    With ``bound`` None the match must be bitwise with ``expected64`` rounded to ``dtype``.
    """
    got64 = got.detach().double().cpu()
    expected64 = expected64.detach().cpu()
    error = (got64 - expected64).abs()
    if bound is None:
        bad = ~(got64 == expected64.to(dtype).double())
        excess = error
    else:
        bound = bound.cpu()
        bad = ~(error <= bound)  # NaN anywhere counts as bad
        excess = error / bound.clamp_min(torch.finfo(torch.float64).tiny)
    count = int(bad.sum())
    if count == 0:
        return None
    excess = torch.where(bad, excess.nan_to_num(nan=float("inf")), torch.zeros((), dtype=torch.float64))
    worst = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape))
    text = (
        f"{count} of {bad.numel()} elements differ; worst at index {worst}: "
        f"got {got64[worst].item()!r}, expected {expected64[worst].item()!r}"
    )
    if bound is not None:
        text += f", allowed error {bound[worst].item():.3g}"
    return text


def _require_exact_case(x64: torch.Tensor, w64: torch.Tensor, spec, check_case: CheckCase) -> None:
    """Exact mode is only exact while every partial sum stays below the dtype's integer limit."""
    finite_w = torch.nan_to_num(w64, nan=0.0)
    magnitude = max(float(b.max()) for b in reference_forward(x64.abs(), finite_w.abs(), spec))
    if magnitude >= _EXACT_LIMIT[check_case.torch_dtype]:
        raise ValueError(f"case too large for exact mode: sums reach {magnitude:.3g}")


def _check_gradients(impl: Implementation, check_case: CheckCase, spec) -> list[Failure]:
    """Exact-arithmetic gradients: integer data and upstream gradients, finite pruned weights."""
    exact = dataclasses.replace(check_case, mode="exact")
    inputs = make_inputs(exact, nan_pruned=False)
    x = inputs.x.detach().requires_grad_()
    weight = inputs.weight.detach().requires_grad_()
    x64 = inputs.x.detach().double().requires_grad_()
    w64 = inputs.weight.detach().double().requires_grad_()
    assert inputs.upstream is not None
    upstream64 = [u.double() for u in inputs.upstream]
    # Magnitudes of the gradient sums, to keep exact mode exact.
    ax, aw = x64.detach().abs().requires_grad_(), w64.detach().abs().requires_grad_()
    torch.autograd.backward(reference_forward(ax, aw, spec), [u.abs() for u in upstream64])
    limit = max(float(ax.grad.max()), float(aw.grad.max()))
    if limit >= _EXACT_LIMIT[exact.torch_dtype]:
        raise ValueError(f"case too large for exact gradients: sums reach {limit:.3g}")

    torch.autograd.backward(reference_forward(x64, w64, spec), upstream64)
    try:
        torch.autograd.backward(impl(x, weight, spec), list(inputs.upstream))
    except Exception as error:
        return [Failure("error", f"backward: {type(error).__name__}: {error}")]
    failures = []
    for label, mine, theirs in (("x", x.grad, x64.grad), ("weight", weight.grad, w64.grad)):
        if mine is None:
            failures.append(Failure("gradient", f"no gradient reached {label}"))
            continue
        message = describe_mismatch(mine, theirs, None, exact.torch_dtype)
        if message:
            failures.append(Failure("gradient", f"d/d{label}: {message}"))
    return failures
