"""The check itself: run an implementation on a ``CheckCase`` and compare it with the reference
(forward, input mutation, exact gradients); failures are recorded, never raised."""

from __future__ import annotations

import dataclasses
import functools
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import eligibility, reference
from harness.eligibility import Purpose
from harness.checking import compare, inputs, integrity
from harness.checking.compare import Expected, bitwise_equal, compare_with_reference, describe_mismatch, expected_result
from harness.checking.gradients import check_backward
from harness.checking.inputs import EXACT_LIMIT, CheckCase, make_inputs
from harness.reference import Branches, reference_forward
from harness.registry import DEFAULT_IMPLS_DIR, Implementation


@dataclass(frozen=True)
class Failure:
    #: "error", "refused" (a case too large for this machine), "timeout", "crash", "mutated-input", "values", "gradient", "cheat" (integrity), "tampering"
    kind: str
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
        refused = all(failure.kind == "refused" for failure in self.failures)
        headline = "was not checked (the harness refused the case)" if refused else "does not match the reference"
        lines = [f"{self.implementation} {headline}. Reproduce with:", f"  {self.reproducer}"]
        lines += [f"  [{failure.kind}] {failure.message}" for failure in self.failures]
        return "\n".join(lines)


class MismatchError(AssertionError):
    """Raised by ``assert_matches_reference``; its message is ``CheckResult.report()``."""

    def __init__(self, result: CheckResult):
        super().__init__(result.report())
        self.result = result


def check(impl: Implementation, check_case: CheckCase, *, gradients: bool = True) -> CheckResult:
    """Run ``impl`` on ``check_case`` and compare with the reference; never raises for the
    implementation's own errors (they are recorded as failures)."""
    folder = _folder_of(impl)
    reason = eligibility.reason(impl, check_case.device, check_case.torch_dtype, Purpose.CHECK)
    if reason is not None:
        return CheckResult(impl.name, check_case, skipped=reason, impls_dir=folder)
    spec = check_case.case.spec()
    mine = [impl.source] if impl.source else []
    failures = [Failure("tampering", t.message()) for t in _GUARD.tampered() if t.source is None or t.by(mine)]
    failures += _check_forward(impl, check_case, spec)
    if gradients and not failures and impl.backward is not None:
        failures += [Failure(kind, message) for kind, message in check_backward(impl, check_case, spec)]
    elif gradients and not failures and impl.autograd:
        failures += _check_gradients(impl, check_case, spec)
    return CheckResult(impl.name, check_case, tuple(failures), impls_dir=folder)


def _folder_of(impl: Implementation) -> Path | None:
    """The folder a reproducer names (``--impls-dir``): the one the implementation's file is in,
    unless that is the project's impls/ or it is an installed plug-in (found wherever it is installed)."""
    if impl.source is None or impl.plugin is not None:
        return None
    folder = impl.source.parent.parent if impl.source.name == "__init__.py" else impl.source.parent
    return None if folder == DEFAULT_IMPLS_DIR else folder


class CheckSkipped(Exception):
    """Raised by ``assert_matches_reference`` when the check could not run (the reason is the
    message), so a caller can never take a skipped check for a passed one."""


def assert_matches_reference(impl: Implementation, check_case: CheckCase, *, gradients: bool = True) -> None:
    result = check(impl, check_case, gradients=gradients)
    if result.skipped:
        raise CheckSkipped(f"{impl.name}: {result.skipped}")
    if result.failures:
        raise MismatchError(result)


def _check_forward(impl: Implementation, check_case: CheckCase, spec) -> list[Failure]:
    """The forward check, in two calls on the same input buffers: the seeded inputs, then the
    same buffers refilled with -x (``integrity.probe_inputs``) after the first outputs were
    poisoned, so a result cached by input address or replayed from the first call fails."""
    made = make_inputs(check_case, nan_pruned=True)
    x, weight = made.x, made.weight
    expected = _expected(check_case)
    failures: list[Failure] = []
    first = None
    for call, wanted in enumerate((expected, _negated(expected))):
        if call == 1:
            integrity.poison(first)
            integrity.probe_inputs(x)
        before = (x.clone(), weight.clone())
        returned, got, problems = _guarded_call(impl, x, weight, spec, earlier=() if first is None else first)
        when = "" if call == 0 else "second call (the same input buffers, now holding -x): "
        failures += [Failure(kind, when + message) for kind, message in problems]
        if got is None or problems:
            return failures
        for label, original, now in (("x", before[0], x), ("weight", before[1], weight)):
            if not bitwise_equal(original, now):
                failures.append(Failure("mutated-input", f"{when}the implementation modified its input {label}"))
        mismatches = compare_with_reference(got, wanted, check_case.torch_dtype)
        if call == 1 and mismatches:
            mismatches = [
                f"{m} (the first call matched: a result cached by input address, or replayed, instead of computed)"
                for m in mismatches
            ]
        failures += [Failure("values", when + problem) for problem in mismatches]
        if failures:
            return failures
        first = returned  # held until the second call: its memory cannot be handed out again
    return failures


def _guarded_call(impl: Implementation, x, weight, spec, earlier):
    """One call of the implementation under the integrity checks: what it returned, a copy of
    that as it was when the call returned (both None if it raised or cheated) and the problems."""
    known = set(_GUARD.found)
    try:
        with torch.no_grad():
            got = impl(x, weight, spec)
    except (Exception, SystemExit) as error:  # an implementation's crash is a finding, recorded with its type
        return None, None, [("error", f"{type(error).__name__}: {error}")]
    problems = [("tampering", f"during the call: {t.message()}") for t in _GUARD.tampered() if t.key not in known]
    problems += [("cheat", message) for message in integrity.output_problems(got, {"x": x, "weight": weight}, earlier)]
    if problems:
        return None, None, problems
    now = integrity.settled(got)
    problems += [
        ("cheat", f"output {label} changed after the call returned (computed lazily, on another thread or on another CUDA stream)")
        for label in now.changed
    ]
    return (got, Branches(*now.snapshot), problems) if not problems else (None, None, problems)


def _negated(expected: Expected) -> Expected:
    """The exact answer for -x (the operator is linear in x; negation is exact)."""
    return Expected(Branches(*(-b for b in expected.branches)), expected.bounds)


@functools.lru_cache(maxsize=4)
def _expected(check_case: CheckCase) -> Expected:
    """The reference's answer for a check, computed once while several implementations are
    checked on it in turn (the float64 reference of a real layer takes seconds)."""
    inputs = make_inputs(check_case, nan_pruned=True)
    exact = check_case.mode == "exact"
    if exact:
        _require_exact_case(inputs.x.double(), inputs.weight.double(), check_case.case.spec(), check_case)
    return expected_result(inputs.x, inputs.weight, check_case.case.spec(), exact=exact)


def _require_exact_case(x64: torch.Tensor, w64: torch.Tensor, spec, check_case: CheckCase) -> None:
    """Exact mode is only exact while every partial sum stays below the dtype's integer limit."""
    finite_w = torch.nan_to_num(w64, nan=0.0)
    magnitude = max(float(b.max()) for b in reference_forward(x64.abs(), finite_w.abs(), spec))
    if magnitude >= EXACT_LIMIT[check_case.torch_dtype]:
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
    if limit >= EXACT_LIMIT[exact.torch_dtype]:
        raise ValueError(f"case too large for exact gradients: sums reach {limit:.3g}")

    torch.autograd.backward(reference_forward(x64, w64, spec), upstream64)
    try:
        torch.autograd.backward(impl(x, weight, spec), list(inputs.upstream))
    except (Exception, SystemExit) as error:
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


#: What the checks rely on, as imported (before any implementation): the clocks, the reference,
#: the comparison and this module. A replacement is reported against the implementation whose
#: file defined it, and put back.
_GUARD = integrity.Guard.of(
    reference, compare, inputs, integrity, sys.modules[__name__], time, torch.cuda,
    names={time: integrity.CLOCKS, torch.cuda: integrity.CUDA_FUNCTIONS},
)  # fmt: skip
