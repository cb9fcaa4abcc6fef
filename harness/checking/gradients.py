"""The backward's check: an implementation's declared backward (``Implementation.run_backward``)
against the float64 reference's gradients, like the forward.

- ``exact`` mode: integer x, weights and branch gradients (``make_inputs``), so every partial
  sum of both gradients is an integer below the dtype's limit (checked: the case is refused
  otherwise) and any summation order is exact: bit for bit with the reference.
- ``float`` mode: standard normal x, weights and branch gradients; every element within
  ``harness.gradient_bound`` (rigorous, any order) of the reference.

The pruned kernels' weights are finite, nonzero and different from the active ones, so a
backward that reads them (a dropped pruning mask) gets wrong values, and their gradient must be
exactly zero (its bound is 0). They are not NaN, as they are in the forward's check: an
implementation that computes only the shift-add (``Computes.SHIFT_ADD``) has its small conv's
backward done by torch's conv, which multiplies the zero gradients of pruned kernels by their
weights (0 * NaN), and that is the harness's stage, not the implementation's.
"""

from __future__ import annotations

import dataclasses

import torch

from harness.checking.compare import bitwise_equal, describe_mismatch
from harness.checking.inputs import EXACT_LIMIT, CheckCase, make_inputs
from harness.reference import Branches, gradient_bound, reference_gradients
from harness.registry import Implementation
from harness.spec import ShiftwiseSpec


@dataclasses.dataclass(frozen=True)
class GradientInputs:
    x: torch.Tensor
    weight: torch.Tensor
    grads: Branches


def gradient_inputs(check_case: CheckCase) -> GradientInputs:
    """Seeded x, weight (finite pruned kernels) and branch gradients in the case's dtype,
    layout and device: integers in exact mode, standard normal in float mode."""
    inputs = make_inputs(check_case, nan_pruned=False)
    if inputs.upstream is not None:
        return GradientInputs(inputs.x, inputs.weight, inputs.upstream)
    generator = torch.Generator().manual_seed(check_case.case.seed + 1)
    shape = check_case.case.input_shape
    grads = Branches(
        *(
            torch.randn(shape, generator=generator, dtype=torch.float64).to(check_case.torch_dtype).to(check_case.device)
            for _ in "hvi"
        )
    )
    return GradientInputs(inputs.x, inputs.weight, grads)


def check_backward(impl: Implementation, check_case: CheckCase, spec: ShiftwiseSpec) -> list[tuple[str, str]]:
    """(kind, message) for every way ``impl``'s declared backward differs from the reference's
    on ``check_case``; empty when it matches. Never raises for the implementation's errors."""
    inputs = gradient_inputs(check_case)
    dtype = check_case.torch_dtype
    x64, w64 = inputs.x.detach().double().cpu(), inputs.weight.detach().double().cpu()
    g64 = Branches(*(g.detach().double().cpu() for g in inputs.grads))
    expected = reference_gradients(x64, w64, spec, g64)
    if check_case.mode == "exact":
        magnitudes = reference_gradients(x64.abs(), w64.abs(), spec, Branches(*(g.abs() for g in g64)))
        largest = max(float(m.max()) if m.numel() else 0.0 for m in magnitudes)
        if largest >= EXACT_LIMIT[dtype]:
            raise ValueError(f"case too large for exact gradients: sums reach {largest:.3g}")
        bounds: tuple = (None, None)
    else:
        bounds = gradient_bound(x64, w64, spec, g64, dtype)
    before = [t.clone() for t in (inputs.x, inputs.weight, *inputs.grads)]
    try:
        got = impl.run_backward(inputs.x, inputs.weight, spec, inputs.grads)
    except Exception as error:  # the implementation's crash is a finding
        return [("error", f"backward: {type(error).__name__}: {error}")]
    failures = []
    labels = ("x", "weight", "grad_h", "grad_v", "grad_i")
    for label, original, now in zip(labels, before, (inputs.x, inputs.weight, *inputs.grads)):
        if not bitwise_equal(original, now):
            failures.append(("mutated-input", f"the backward modified its input {label}"))
    for label, mine, theirs, bound in zip(("x", "weight"), got, expected, bounds):
        message = describe_mismatch(mine, theirs, bound, dtype)
        if message:
            failures.append(("gradient", f"d/d{label}: {message}"))
    return failures
