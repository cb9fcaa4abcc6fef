"""The one comparison of a computed result with the float64 reference: bit for bit (exact mode)
or within the per-element error bound (float mode). ``checking`` and the benchmarks both use it."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from harness.reference import Branches, error_bound, reference_forward, summed_bound
from harness.spec import ShiftwiseSpec


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and the same bits in every element (NaN == NaN, -0.0 != 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))


@dataclass(frozen=True)
class Expected:
    """The reference's answer on some inputs: float64 branches and, in float mode, the
    per-element error bound (None: exact mode, bit for bit)."""

    branches: Branches
    bounds: Branches | None


def expected_result(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, *, exact: bool) -> Expected:
    """The float64 reference on (x, weight), and the error bound for x's dtype unless ``exact``."""
    x64, w64 = x.detach().double(), weight.detach().double()
    return Expected(reference_forward(x64, w64, spec), None if exact else error_bound(x64, w64, spec, x.dtype))


class References:
    """Float64 reference evaluations memoised by the bits of their inputs.

    A benchmark item verifies its computation up to four times on the same inputs (the first
    call, the last timed one, ...), and a layer comparison's members all draw the same seeded
    inputs: each evaluation (seconds on a 2-core CPU) is done once here and shared. The key is
    what the result depends on: a digest of x's and the weight's bytes with their dtype, shape
    and device, the spec's sizes and tables, and which evaluation; so an input refilled in place
    (the integrity probe's -x, or an implementation writing into it) is a different entry, never
    a stale one. The ``size`` most recent entries are kept (the reference of a B=64 case is
    hundreds of MB)."""

    def __init__(self, size: int = 4) -> None:
        if size < 1:
            raise ValueError(f"References keeps at least one entry, got size={size}")
        self.size = size
        self._entries: OrderedDict[tuple, object] = OrderedDict()
        self.evaluations = 0  # how many were computed (not found): what the sharing saves is visible

    def expected(self, x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, *, exact: bool) -> Expected:
        """``expected_result(x, weight, spec, exact=exact)``, evaluated once per input bits."""
        return self._memo(("expected", exact), lambda: expected_result(x, weight, spec, exact=exact), x, weight, spec)

    def residual_sum(self, x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """A deployed layer's one output h + v + i + x in float64 and its bound in x's dtype
        (``summed_bound(..., residual=True)``), evaluated once per input bits."""

        def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
            x64, w64 = x.detach().double(), weight.detach().double()
            return sum(reference_forward(x64, w64, spec)) + x64, summed_bound(x64, w64, spec, x.dtype, residual=True)

        return self._memo(("residual_sum",), evaluate, x, weight, spec)

    def summed(self, x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> torch.Tensor:
        """``summed_bound`` of x's dtype (one output h + v + i), evaluated once per input bits."""
        return self._memo(("summed",), lambda: summed_bound(x.detach().double(), weight.detach().double(), spec, x.dtype), x, weight, spec)

    def _memo(self, what: tuple, evaluate: Callable[[], object], x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec):
        key = (what, _tensor_key(x), _tensor_key(weight), _spec_key(spec))
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = evaluate()
        self.evaluations += 1
        self._entries[key] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


def _tensor_key(t: torch.Tensor) -> tuple:
    data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    return str(t.dtype), tuple(t.shape), str(t.device), hashlib.blake2b(data, digest_size=16).digest()


def _spec_key(spec: ShiftwiseSpec) -> tuple:
    tables = hashlib.blake2b(digest_size=16)
    for table in (spec.slot_h, spec.slot_v, spec.ident, spec.active):
        tables.update(np.ascontiguousarray(table).tobytes())
    return spec.big_kernel, spec.small_kernel, spec.channels, spec.groups, tables.digest()


def compare_with_reference(got: Branches, expected: Expected, dtype: torch.dtype) -> list[str]:
    """Per branch, what differs between ``got`` (computed in ``dtype``) and the reference: empty
    when it matches. Exact: bit for bit with the reference rounded to ``dtype``; else within
    the error bound, per element."""
    bounds = expected.bounds or (None,) * 3
    return [
        f"branch {label}: {message}"
        for label, out, ref, bound in zip("hvi", got, expected.branches, bounds)
        if (message := describe_mismatch(out, ref, bound, dtype))
    ]


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
