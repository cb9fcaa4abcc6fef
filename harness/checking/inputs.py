"""What a check runs on: a ``CheckCase`` (a case plus dtype, mode, memory layout and device,
written and read back as the ``key=value`` string of a reproducer) and the seeded inputs it makes."""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass, field

import torch

from harness.cases import Case
from harness.reference import Branches

MODES = ("exact", "float")
LAYOUTS = ("contiguous", "strided", "channels_last")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Largest magnitude below which every integer is exact in each dtype.
EXACT_LIMIT = {torch.float32: 2.0**24, torch.float64: 2.0**53}


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
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device must be a torch device such as cpu, cuda or cuda:1, got {self.device!r}") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda (the devices implementations declare), got {self.device!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_args(self) -> str:
        """``key=value`` pairs that ``CheckCase.parse`` reads back: the reproducer's case."""
        values = {**dataclasses.asdict(self.case), **dataclasses.asdict(self)}
        del values["case"], values["suite"], values["tier"]
        return " ".join(f"{key}={shlex.quote(str(value))}" for key, value in values.items())

    def footprint_bytes(self) -> int:
        """A lower bound on what one check of this case holds at once (the harness's side only):
        the float64 draws, the inputs in their dtype and layout, the float64 reference, its bound and
        the reference of the magnitudes (three branches each), the implementation's three branches
        and the float64 copies the comparison makes."""
        case, spec = self.case, self.case.spec()
        size = self.torch_dtype.itemsize
        per_map = case.batch * spec.channels * case.height * case.width
        layout = 2 if self.layout == "strided" else 1
        weight = spec.channels * spec.nk * spec.small_kernel**2
        return per_map * (8 * (4 + 3 + 3 + 3 + 2) + size * (layout + 3)) + weight * (8 + size)

    def ensure_fits(self) -> None:
        """Refuse (``CaseTooLarge``) a case whose check cannot fit in the memory available now,
        before anything is allocated (a huge case would otherwise be killed by the OOM killer)."""
        need, available = self.footprint_bytes(), available_memory_bytes()
        if available is not None and need > available:
            raise CaseTooLarge(
                f"case {self.case.name!r} needs at least {_gib(need)} for one check "
                f"(B={self.case.batch}, C={self.case.spec().channels}, {self.case.height}x{self.case.width}, "
                f"{self.dtype}), more than the {_gib(available)} this machine has available"
            )

    @classmethod
    def parse(cls, text: str) -> CheckCase:
        """Read ``key=value`` pairs (``to_args``'s format); types follow the dataclass fields."""
        values: dict[str, str] = {}
        for token in shlex.split(text):
            key, sep, value = token.partition("=")
            if not sep:
                raise ValueError(f"case string: expected key=value, got {token!r}")
            if key in values:
                raise ValueError(f"case string: key {key!r} given twice ({values[key]!r} and {value!r})")
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
        required = {name for name, f in case_fields.items() if f.default is dataclasses.MISSING and name != "name"}
        missing = sorted(required - set(case_values))
        if missing:
            raise ValueError(f"case string: missing keys {missing} (a reproducer line gives them all)")
        return cls(Case(**case_values), **{key: values[key] for key in own if key in values})


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


class CaseTooLarge(ValueError):
    """A case refused before anything is allocated: its check cannot fit in memory."""


def available_memory_bytes() -> int | None:
    """Memory a new allocation can get without swapping: MemAvailable on Linux, else the free
    pages; None where neither is known (then nothing is refused)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class _Inputs:
    x: torch.Tensor
    weight: torch.Tensor
    upstream: Branches | None = field(default=None)


def make_inputs(check: CheckCase, *, nan_pruned: bool) -> _Inputs:
    """Seeded inputs in the case's dtype, layout and device (drawn on the CPU in float64)."""
    check.ensure_fits()
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
