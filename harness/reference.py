"""The oracle: the SW operator as three re-parameterized ("rep-merged") depthwise convolutions.

Every stage of the SW operator is linear and shift-invariant, so each branch equals one
depthwise cross-correlation of the input with a merged kernel. The horizontal kernel has k
rows and nk*k columns at horizontal offsets ``-M//2 .. nk*k-1-M//2``: when k does not divide
M that range is not centred, so the reference pads the input asymmetrically.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from harness.inputs import validate_inputs
from harness.spec import ShiftwiseSpec


class Branches(NamedTuple):
    """The three outputs of the SW operator, each (B, C, H, W)."""

    h: torch.Tensor
    v: torch.Tensor
    i: torch.Tensor


class MergedKernels(NamedTuple):
    """Depthwise kernels equivalent to each branch (official weight dtype and device).

    ``h`` is (C, 1, k, nk*k) with its column 0 at horizontal offset ``-M//2``; ``v`` is
    (C, 1, nk*k, k) with its row 0 at vertical offset ``-M//2`` (the small kernels are placed
    along a column, not transposed); ``i`` is the centred (C, 1, k, k) identity kernel.
    """

    h: torch.Tensor
    v: torch.Tensor
    i: torch.Tensor


def small_conv(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> torch.Tensor:
    """Stage 1: the grouped conv, (B, C, H, W) -> (B, C*nk, H + 2e, W + 2e).

    TF32 is off: the harness runs this for shift-add implementations, and must not lose
    precision on their behalf.
    """
    cudnn = torch.backends.cudnn
    keep = dict(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic)
    with cudnn.flags(**keep, allow_tf32=False):
        return F.conv2d(x, weight, padding=spec.padding, groups=spec.channels)


def merge_kernels(weight: torch.Tensor, spec: ShiftwiseSpec) -> MergedKernels:
    """Place every active small kernel at its slot in the three large depthwise kernels.

    Pruned kernels are left out by index selection (never multiplied by zero), so NaN or inf
    in their weights cannot reach the result.
    """
    c, nk, k, e = spec.channels, spec.nk, spec.small_kernel, spec.groups
    small = weight.reshape(c, nk, k, k)
    # Scatter-add index: flat position of (c, slot*k + v) for each (g, c, j), active only.
    g_idx, c_idx, j_idx = np.nonzero(np.broadcast_to(spec.active, (e, c, nk)))
    device = weight.device
    chan = torch.as_tensor(c_idx, device=device)
    kern = torch.as_tensor(j_idx, device=device)
    picked = small[chan, kern]  # (n, k, k)

    def slotted(slots: np.ndarray) -> torch.Tensor:
        """(c, slot, u, v): the sum of the small kernels placed at each slot."""
        slot = torch.as_tensor(slots[g_idx, c_idx, j_idx], device=device)
        placed = weight.new_zeros(c, nk, k, k)
        placed.index_put_((chan, slot), picked, accumulate=True)
        return placed

    # Tap (u, v) at slot t: row u, column t*k + v horizontally; row t*k + u, column v vertically.
    horizontal = slotted(spec.slot_h).permute(0, 2, 1, 3).reshape(c, 1, k, nk * k)
    vertical = slotted(spec.slot_v).reshape(c, 1, nk * k, k)

    ident_c = np.repeat(np.arange(c)[None, :], e, axis=0)
    keep = spec.active[ident_c, spec.ident]
    identity = weight.new_zeros(c, k, k)
    ident_chan = torch.as_tensor(ident_c[keep], device=device)
    identity.index_put_(
        (ident_chan,), small[ident_chan, torch.as_tensor(spec.ident[keep], device=device)], accumulate=True
    )
    return MergedKernels(horizontal.contiguous(), vertical.contiguous(), identity.unsqueeze(1))


@contextlib.contextmanager
def _math_flags(deterministic: bool):
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
    )
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:2]
        torch.use_deterministic_algorithms(saved[2])


def exact_math():
    """No TF32 and deterministic algorithms while the reference runs (restored afterwards)."""
    return _math_flags(deterministic=True)


def no_tf32():
    """True FP32 (TF32 off) with whatever algorithms torch finds fastest: how the timed peers
    run, computing in the same precision as the implementations (restored afterwards)."""
    return _math_flags(deterministic=False)


def merged_forward(
    x: torch.Tensor, kernels: MergedKernels, spec: ShiftwiseSpec, *, deterministic: bool = True
) -> Branches:
    """Run the three merged depthwise convs with the exact (asymmetric) zero padding
    (deterministic algorithms, ``exact_math``, unless ``deterministic`` is False: then ``no_tf32``)."""
    half = spec.big_kernel // 2
    far = spec.nk * spec.small_kernel - 1 - half  # offset of the last strip tap; > half if k ∤ M
    r = spec.small_kernel // 2
    c = spec.channels
    with exact_math() if deterministic else no_tf32():
        # F.pad order: (left, right, top, bottom)
        h = F.conv2d(F.pad(x, (half, far, r, r)), kernels.h, groups=c)
        v = F.conv2d(F.pad(x, (r, r, half, far)), kernels.v, groups=c)
        i = F.conv2d(x, kernels.i, padding=r, groups=c)
    return Branches(h, v, i)


def reference_forward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    """The SW operator's three branches, computed as rep-merged depthwise convolutions.

    ``x`` is (B, C, H, W), ``weight`` (C*nk, 1, k, k) in the official layout, same dtype and
    device. Differentiable in both. Run it in float64 to use it as the oracle.
    """
    validate_inputs(x, weight, spec, name="reference_forward")
    return merged_forward(x, merge_kernels(weight, spec), spec)


def error_bound(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, dtype: torch.dtype) -> Branches:
    """Per-element bound on |computed - exact| for any summation order in ``dtype``.

    Each output element is a sum of n products x*w (n = E*nk*k*k for the strips, E*k*k for the
    identity). Whatever the order and grouping (two stages, merged kernel, FMA or not), each
    product passes through at most n roundings, so (Higham, Accuracy and Stability, 3.1)

        |computed - exact| <= gamma_n * (|x| conv merge(|W|)),   gamma_n = n*u / (1 - n*u),

    with u the unit roundoff of ``dtype``. The float64 oracle has its own error (gamma_n at
    u = 2**-53), added here, so the comparison is against the oracle, not the exact value.
    ``BOUND_FACTOR`` scales the sum; it is 1: the bound is the theorem, with no slack.
    """
    with torch.no_grad():
        magnitude = reference_forward(x.detach().abs().double(), weight.detach().abs().double(), spec)
    e, nk, k = spec.groups, spec.nk, spec.small_kernel
    terms = Branches(e * nk * k * k, e * nk * k * k, e * k * k)
    return Branches(
        *(
            BOUND_FACTOR * (_gamma(n, dtype) + _gamma(n, torch.float64)) * m
            for n, m in zip(terms, magnitude)
        )
    )


def summed_bound(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, dtype: torch.dtype,
                 residual: bool = False) -> torch.Tensor:  # fmt: skip
    """Per-element bound on |computed - exact| of the three branches' sum h + v + i computed in
    ``dtype`` by one summation of all their products (one conv with the summed cross kernel):
    n = 2*E*nk*k*k + E*k*k products, so the bound is gamma_n of ``dtype`` times
    |x| conv (|merge(W)| summed), plus the float64 oracle's own gamma_{n+3} (its three
    branches' sums and the two adds between them); see ``error_bound``. With ``residual`` the
    sum is h + v + i + x (a deployed layer's identity folded in as a centre tap of 1): one
    product more, |x| more magnitude, and the oracle's one add more."""
    with torch.no_grad():
        magnitude = sum(reference_forward(x.detach().abs().double(), weight.detach().abs().double(), spec))
        if residual:
            magnitude = magnitude + x.detach().abs().double()
    e, nk, k = spec.groups, spec.nk, spec.small_kernel
    terms = 2 * e * nk * k * k + e * k * k + int(residual)
    return BOUND_FACTOR * (_gamma(terms, dtype) + _gamma(terms + 3, torch.float64)) * magnitude


#: Roundings in the lower precision each product of ``lower_precision_bound`` passes through:
#: x's element, the merged tap, the product (counted, though float32 holds it exactly), the output.
LOWER_PRECISION_ROUNDINGS = 4


def lower_precision_bound(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, dtype: torch.dtype,
                          accumulate: torch.dtype = torch.float32) -> Branches:  # fmt: skip
    """Per-element bound on |computed - exact| of the branches computed from ``x`` (float32 or
    float64) by merged kernels rounded to ``dtype`` (float16, bfloat16) on x rounded to ``dtype``,
    the products summed in ``accumulate`` (what cuDNN and oneDNN do for FP16/BF16 convs: a
    float32 compute type) and each output rounded to ``dtype``.

    Each product passes through at most ``LOWER_PRECISION_ROUNDINGS`` roundings of unit
    roundoff u (``dtype``'s) and at most n (``error_bound``'s n: the merge's sums and the
    conv's) of the coarser of x's dtype and ``accumulate``, so (Higham 3.1, lemma 3.3)

        |computed - exact| <= (g - 1) * (|x| conv merge(|w|)) + eta * (n * (max|x| + max|w| + 1) + 1) * g,
        g = (1 + gamma_4(u)) * (1 + gamma_n(acc)),

    w the small weights, eta the absolute error of a rounding that underflows (half ``dtype``'s
    smallest subnormal: float16's normal range starts at 6.1e-5, so small inputs do), plus the
    float64 oracle's own gamma_n. A backend that summed in ``dtype`` itself would need
    gamma_n(u), which does not exist at SW-tiny's n = 612 in bfloat16 (n*u > 1): a check
    against this bound also tells which it did.
    """
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"lower_precision_bound: x must be float32 or float64, got {x.dtype}")
    with torch.no_grad():
        x_abs, w_abs = x.detach().abs().double(), torch.nan_to_num(weight.detach().double(), nan=0.0).abs()
        magnitude = reference_forward(x_abs, w_abs, spec)
        largest = float(x_abs.max()) + float(w_abs.max()) + 1.0  # a pruned kernel's NaN counts as 0
    e, nk, k = spec.groups, spec.nk, spec.small_kernel
    eta = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps / 2  # half the subnormal spacing
    coarser = max((x.dtype, accumulate), key=lambda t: torch.finfo(t).eps)
    low = _gamma(LOWER_PRECISION_ROUNDINGS, dtype)
    bounds = []
    for n, m in zip((e * nk * k * k, e * nk * k * k, e * k * k), magnitude):
        grow = (1 + low) * (1 + _gamma(n, coarser))
        bounds.append(BOUND_FACTOR * ((grow - 1 + _gamma(n, torch.float64)) * m + eta * (n * largest + 1) * grow))
    return Branches(*bounds)


def reference_gradients(
    x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, grads: Branches
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight) of the operator at (x, weight) for the branch gradients ``grads``:
    autograd of ``reference_forward`` (run it in float64 for the oracle). A pruned kernel's
    weights are never read and their gradient is exactly zero (index selection)."""
    with torch.enable_grad():
        xx, ww = x.detach().requires_grad_(), weight.detach().requires_grad_()
        grad_x, grad_w = torch.autograd.grad(tuple(reference_forward(xx, ww, spec)), (xx, ww), tuple(grads))
    return grad_x, grad_w


def gradient_terms(spec: ShiftwiseSpec, shape: tuple[int, int, int, int]) -> tuple[int, int]:
    """Products x*w (grad_x) and x*g (grad_weight) summed into one gradient element.

    grad_x[b, c, i, x] = sum over the three branches' merged taps of K * g: E*nk*k*k taps per
    strip, E*k*k for the identity, so E*k*k*(2*nk + 1). grad_weight[c*nk + j, u, v] = sum over
    the images, the pixels and kernel j's moves of g * x: at most E horizontal, E vertical and
    E identity moves, each over at most H*W pixels, so 3*E*B*H*W."""
    batch, _, height, width = shape
    e, nk, k = spec.groups, spec.nk, spec.small_kernel
    return e * k * k * (2 * nk + 1), 3 * e * batch * height * width


def gradient_bound(
    x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, grads: Branches, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element bounds on |computed - oracle| of (grad_x, grad_weight) in ``dtype``, any
    summation order: the forward's argument (``error_bound``) for the backward's sums.

    Each gradient element is a sum of n products (``gradient_terms``), and however a backward
    groups them (the adjoint gather summing branch gradients first, then the small conv's
    gradients; or the merged kernels' transposed convs) each product passes through at most n
    roundings (adding an exact zero, as zero padding does, does not round). So

        |computed - exact| <= gamma_n * M,   M = the same sum of |products|,

    and M is the reference's gradient at |x|, |W| for the upstream |g| (every merged tap of
    |W| is a sum of |w|, so nothing cancels). Plus the float64 oracle's own gamma_n. A pruned
    kernel's bound is 0: its gradient must be exactly zero.
    """
    with torch.no_grad():
        magnitudes = reference_gradients(
            x.detach().abs().double(), torch.nan_to_num(weight.detach().double(), nan=0.0).abs(), spec,
            Branches(*(g.detach().abs().double() for g in grads)),
        )  # fmt: skip
    terms = gradient_terms(spec, tuple(x.shape))
    return tuple(  # type: ignore[return-value]
        BOUND_FACTOR * (_gamma(n, dtype) + _gamma(n, torch.float64)) * m for n, m in zip(terms, magnitudes)
    )


#: Multiplier of the rigorous worst-case bounds above; see ``error_bound``.
BOUND_FACTOR = 1.0


def gamma(n: int, dtype: torch.dtype) -> float:
    """gamma_n = n*u / (1 - n*u) of ``dtype`` (Higham 3.1): the relative bound of an n-term sum of products."""
    return _gamma(n, dtype)


def _gamma(n: int, dtype: torch.dtype) -> float:
    u = torch.finfo(dtype).eps / 2
    if n * u >= 1:
        raise ValueError(f"{n} terms is too many for a worst-case bound in {dtype}")
    return n * u / (1 - n * u)
