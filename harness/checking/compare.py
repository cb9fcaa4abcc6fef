"""The one comparison of a computed result with the float64 reference: bit for bit (exact mode)
or within the per-element error bound (float mode). ``checking`` and the benchmarks both use it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.reference import Branches, error_bound, reference_forward
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
