"""Peers: the PyTorch ways of computing the SW operator, and the operators it replaces.

Each peer declares its ``Role``:

- ``Role.PYTORCH_WAY``: it computes the SW branches (or their sum) with plain PyTorch, so it is
  what an implementation must beat; "the fastest PyTorch way" of a case is the minimum over
  these. They are checked against the reference in tests/test_peers.py.
- ``Role.OTHER_OPERATOR``: another large-kernel operator at the same layer (SLaK strips,
  UniRepLKNet's 13x13), context only.
- ``Role.LOWER_PRECISION``: the merged convs in FP16 / BF16 (channels_last, cuDNN's fast
  depthwise path on a GPU): context only, never "the fastest PyTorch way" of the FP32 operator,
  checked within its own precision's bound (``harness.reference.lower_precision_bound``).

Each runs as a deployed model would: kernels prepared once, only the convolutions timed, in
true FP32 (TF32 off, like the implementations) with whatever algorithms torch picks. A
channels_last peer converts its input and kernels once in ``prepare`` (a deployed model keeps
that layout, so the conversion is not timed). ``torch.compile`` peers compile and warm up in
``prepare``; that time is ``setup_seconds``, reported separately and never timed.

What a GPU user would pick is here: the merged convs in NCHW (torch's native depthwise kernel)
and channels_last (cuDNN's, autotuned under ``cudnn.benchmark``, which the GPU day's peers phase
sets), the deployed merged form (branch scales, bias and the identity residual folded into two
strips: ``deployed_strips``), ``torch.compile`` in its default and max-autotune modes of the
merged and of the naive (small conv + shift-add) form, and the FP16 / BF16 rows.

Why several merged-kernel peers: on a CPU the memory layout and the padding path change the
time of the same depthwise conv by up to 20x (a 3x51 kernel with ``padding=(1, 25)`` in NCHW
against channels_last, oneDNN), and which one wins depends on the layer, so a user would try
them all.

A peer's ``flops`` are those its convolutions execute (2 per tap per output element, zero taps
of padded and cross kernels included, since a dense conv runs them; a slice-and-add shift-add's
adds included); its compulsory bytes are its input, kernels and outputs, each moved once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.cases import Case
from harness.checking import describe_mismatch
from harness.reference import (gamma, lower_precision_bound, merge_kernels, merged_forward, no_tf32, reference_forward,
                               small_conv)  # fmt: skip
from harness.registry import Computes, Implementation, Role, implementations
from harness.spec import ShiftwiseSpec


@dataclass(frozen=True)
class PreparedPeer:
    """A ready-to-time call and what it does by count."""

    run: Callable[[], object]
    flops: int
    compulsory_bytes: int
    #: compile / preparation time (torch.compile), reported separately, never timed
    setup_seconds: float | None = None
    #: another operator's check of its own result (``checked_convs``): raises AssertionError or
    #: says what was verified. None for a PyTorch way: the benchmarks compare it with the SW reference.
    verify: Callable[[object], str] | None = None
    #: its one output is a deployed layer's h + v + i + x (the identity folded in): the benchmarks
    #: hold it to that sum's bound (``summed_bound(..., residual=True)``)
    residual_sum: bool = False


@dataclass(frozen=True)
class Peer:
    name: str
    description: str
    role: Role
    #: (case, x, sw weight) -> PreparedPeer; x is the case's NCHW input, the weight the SW small kernels
    prepare: Callable[[Case, torch.Tensor, torch.Tensor], PreparedPeer]
    #: the results tables' speed baseline (exactly one peer: rep_merged)
    baseline: bool = False
    #: the first benchmark tier that times it ("full": too slow to prepare or run for the quick
    #: tier's minutes on a small machine; listed as not run there, with that reason)
    tier: str = "quick"
    #: why it waits for that tier, for the not-run listing
    tier_reason: str = ""
    #: why it cannot be prepared on a device ("cpu", "cuda"; None: it can), asked before it is timed
    unavailable: Callable[[str], str | None] = lambda device: None
    #: its ``prepare`` runs torch.compile (seconds to a minute per shape: the GPU day times it last)
    compiled: bool = False
    #: a deployed layer's form (one output h + v + i + x): compared with the implementations'
    #: deployed layers, not with their operators
    deployed: bool = False


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    return F.conv2d(F.pad(x, padding), kernel, groups=x.shape[1])


def _bytes(x: torch.Tensor, kernels: list[torch.Tensor], outputs: int) -> int:
    return x.element_size() * (x.numel() * (1 + outputs) + sum(k.numel() for k in kernels))


def _conv_flops(x: torch.Tensor, kernels: list[torch.Tensor]) -> int:
    """2 FLOPs per tap per output element of depthwise convs keeping x's spatial size."""
    batch, _, height, width = x.shape
    return 2 * batch * height * width * sum(k.numel() for k in kernels)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _rep_merged(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
    spec = case.spec()
    kernels = merge_kernels(weight, spec)
    merged = [kernels.h, kernels.v, kernels.i]
    return PreparedPeer(
        lambda: merged_forward(x, kernels, spec, deterministic=False), _conv_flops(x, merged), _bytes(x, merged, 3)
    )


def checked_convs(x: torch.Tensor, convs: list[tuple[torch.Tensor, tuple[int, int, int, int]]]) -> Callable[[object], str]:
    """The check of another operator's depthwise convs ``convs`` ((kernel, F.pad padding) each)
    on ``x``: each output within gamma_n of x's dtype (n: the kernel's taps) of the same conv in
    float64, plus float64's own gamma_n, times |x| conv |kernel| (the bound of ``error_bound``,
    for one conv)."""
    x64 = x.detach().double()
    wanted, bounds = [], []
    with torch.no_grad():
        for kernel, padding in convs:
            k64, taps = kernel.detach().double(), kernel[0].numel()
            wanted.append(_depthwise(x64, k64, padding))
            magnitude = _depthwise(x64.abs(), k64.abs(), padding)
            bounds.append((gamma(taps, x.dtype) + gamma(taps, torch.float64)) * magnitude)

    def verify(result: object) -> str:
        outputs = result if isinstance(result, tuple) else (result,)
        if len(outputs) != len(wanted):
            raise AssertionError(f"expected {len(wanted)} outputs, got {len(outputs)}")
        for index, (got, want, bound) in enumerate(zip(outputs, wanted, bounds)):
            excess = (got.detach().double() - want).abs() - bound
            if got.shape != want.shape or not bool((excess <= 0).all()):
                worst = excess.max().item() if got.shape == want.shape else float("nan")
                raise AssertionError(f"output {index}: differs from its float64 evaluation beyond the bound (by {worst:.3g})")
        return "another operator: matches its own float64 evaluation within the error bound"

    return verify


def _radius(spec: ShiftwiseSpec) -> int:
    """Half-width of the smallest centred kernel holding the merged strips' taps."""
    half = spec.big_kernel // 2
    return max(half, spec.nk * spec.small_kernel - 1 - half)


def symmetric_kernels(weight: torch.Tensor, spec: ShiftwiseSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The merged kernels zero-padded to centred k x (2R+1) and (2R+1) x k strips, so that
    ``padding=(r, R)`` / ``(R, r)`` applies them without ``F.pad`` (the identity kernel as is)."""
    kernels = merge_kernels(weight, spec)
    half, extent, radius = spec.big_kernel // 2, spec.nk * spec.small_kernel, _radius(spec)
    k, c = spec.small_kernel, spec.channels
    h = weight.new_zeros(c, 1, k, 2 * radius + 1)
    v = weight.new_zeros(c, 1, 2 * radius + 1, k)
    h[..., radius - half : radius - half + extent] = kernels.h
    v[..., radius - half : radius - half + extent, :] = kernels.v
    return h, v, kernels.i


def _merged_way(layout: str, padding: str):
    """The three merged convs in ``layout`` (nchw / channels_last), the strips applied with
    symmetric kernels and the ``padding=`` argument, or with the exact kernels and ``F.pad``."""

    def prepare(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
        spec = case.spec()
        c, r, radius = spec.channels, spec.small_kernel // 2, _radius(spec)
        if padding == "symmetric":
            h, v, i = symmetric_kernels(weight, spec)
        else:
            h, v, i = merge_kernels(weight, spec)
        if layout == "channels_last":
            x, h, v, i = (_channels_last(t) for t in (x, h, v, i))
        half = spec.big_kernel // 2
        far = spec.nk * spec.small_kernel - 1 - half

        def run() -> tuple[torch.Tensor, ...]:
            with no_tf32():
                if padding == "symmetric":
                    out_h = F.conv2d(x, h, padding=(r, radius), groups=c)
                    out_v = F.conv2d(x, v, padding=(radius, r), groups=c)
                else:
                    out_h = _depthwise(x, h, (half, far, r, r))
                    out_v = _depthwise(x, v, (r, r, half, far))
                return out_h, out_v, F.conv2d(x, i, padding=r, groups=c)

        return PreparedPeer(run, _conv_flops(x, [h, v, i]), _bytes(x, [h, v, i], 3))

    return prepare


def cross_kernel(weight: torch.Tensor, spec: ShiftwiseSpec) -> torch.Tensor:
    """The three merged kernels summed into one centred (C, 1, 2R+1, 2R+1) kernel."""
    kernels = merge_kernels(weight, spec)
    half, r = spec.big_kernel // 2, spec.small_kernel // 2
    extent = spec.nk * spec.small_kernel
    radius = _radius(spec)
    cross = weight.new_zeros(spec.channels, 1, 2 * radius + 1, 2 * radius + 1)
    # Tap (a, b) of a merged kernel sits at offset (a - its centre row, b - its centre column).
    cross[:, :, radius - r : radius + r + 1, radius - half : radius - half + extent] += kernels.h
    cross[:, :, radius - half : radius - half + extent, radius - r : radius + r + 1] += kernels.v
    cross[:, :, radius - r : radius + r + 1, radius - r : radius + r + 1] += kernels.i
    return cross


def _rep_cross(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
    kernel = cross_kernel(weight, case.spec())
    radius = kernel.shape[-1] // 2

    def run() -> torch.Tensor:
        with no_tf32():
            return F.conv2d(x, kernel, padding=radius, groups=x.shape[1])

    return PreparedPeer(run, _conv_flops(x, [kernel]), _bytes(x, [kernel], 1))


def deployed_strips(weight: torch.Tensor, spec: ShiftwiseSpec, branch_scale: torch.Tensor | None = None,
                    residual: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The deployed layer's two centred strips (``symmetric_kernels``): the horizontal k x (2R+1)
    one with the identity kernel added at its centre columns and, with ``residual``, +1 at its
    centre tap (the layer's identity residual), and the vertical (2R+1) x k one; each scaled per
    channel by its folded branch BatchNorm (``branch_scale``, (3, C): h, v, i; None: ones). So
    ``conv(x, h, bias, padding=(r, R)) + conv(x, v, padding=(R, r))`` is the reparameterized
    layer's SW channels (bias: the folded BatchNorms' sum)."""
    h, v, i = symmetric_kernels(weight, spec)
    if branch_scale is not None:
        h, v, i = (kernel * scale.view(-1, 1, 1, 1) for kernel, scale in zip((h, v, i), branch_scale))
    r, radius = spec.small_kernel // 2, _radius(spec)
    h = h.clone()
    h[..., radius - r : radius + r + 1] += i
    if residual:
        h[:, 0, r, radius] += 1.0
    return h, v


def _deployed(layout: str):
    """The deployed merged form in ``layout``: two depthwise convs (the bias in the first) and one
    in-place add. A layer case has no BatchNorm: the folded scales are ones and the bias zeros
    (folding real ones changes the kernels' values, not the work). Its flops are the convs' (the
    bias and the add, 2 per output against the strips' 4k(2R+1), are not counted, as torch does not)."""

    def prepare(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
        spec = case.spec()
        c, r, radius = spec.channels, spec.small_kernel // 2, _radius(spec)
        h, v = deployed_strips(weight, spec)
        bias = x.new_zeros(c)
        if layout == "channels_last":
            x, h, v = (_channels_last(t) for t in (x, h, v))

        def run() -> torch.Tensor:
            with no_tf32():
                out = F.conv2d(x, h, bias, padding=(r, radius), groups=c)
                return out.add_(F.conv2d(x, v, padding=(radius, r), groups=c))

        return PreparedPeer(run, _conv_flops(x, [h, v]), _bytes(x, [h, v, bias], 1), residual_sum=True)

    return prepare


def _lower_precision(dtype: torch.dtype):
    """The three merged convs in ``dtype``, channels_last, centred strips and ``padding=``: x and
    the kernels converted once in ``prepare`` (a deployed half-precision model keeps them so)."""

    def prepare(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
        spec = case.spec()
        c, r, radius = spec.channels, spec.small_kernel // 2, _radius(spec)
        low = [_channels_last(t.to(dtype)) for t in (x, *symmetric_kernels(weight, spec))]
        xl, h, v, i = low

        def run() -> tuple[torch.Tensor, ...]:
            out_h = F.conv2d(xl, h, padding=(r, radius), groups=c)
            out_v = F.conv2d(xl, v, padding=(radius, r), groups=c)
            return out_h, out_v, F.conv2d(xl, i, padding=r, groups=c)

        return PreparedPeer(run, _conv_flops(xl, [h, v, i]), _bytes(xl, [h, v, i], 3),
                            verify=_lower_precision_check(x, weight, spec, dtype))  # fmt: skip

    return prepare


def _lower_precision_check(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, dtype: torch.dtype) -> Callable[[object], str]:
    def verify(result: object) -> str:
        outputs = result if isinstance(result, tuple) else (result,)
        if len(outputs) != 3:
            raise AssertionError(f"expected the three branches, got {len(outputs)} outputs")
        x64, w64 = x.detach().double(), weight.detach().double()
        expected = reference_forward(x64, w64, spec)
        bounds = lower_precision_bound(x, weight, spec, dtype)
        for label, got, want, bound in zip("hvi", outputs, expected, bounds):
            if got.dtype != dtype:
                raise AssertionError(f"branch {label}: computed in {got.dtype}, declared {dtype}")
            if message := describe_mismatch(got, want, bound, dtype):
                raise AssertionError(f"branch {label} in {dtype}: {message}")
        name = str(dtype).removeprefix("torch.")
        return f"{name} (lower precision): matches the reference within {name}'s bound (float32 accumulation)"

    return verify


def _no_fp16_on_cpu(device: str) -> str | None:
    if device == "cpu":
        return ("float16 convolution on a CPU takes torch's slow generic path (over 100x the float32 channels_last conv "
                "in one process on this machine): a GPU row only")  # fmt: skip
    return None


#: torch.compile's modes timed: inductor's default, and max-autotune without its own CUDA graphs
#: (cudagraph trees overwrite a call's outputs at the next call, which the benchmarks' checks of
#: the first and last results read; the harness's own graph replay, --gpu-graph, times the
#: captured call instead).
COMPILE_MODES = {"default": None, "max-autotune": "max-autotune-no-cudagraphs"}


def _compiled(fn: Callable[[], object], mode: str = "default") -> tuple[Callable[[], object], float]:
    """``torch.compile`` (inductor) of a no-argument call in ``mode`` (``COMPILE_MODES``), compiled and warmed up now."""
    compiled = torch.compile(fn, backend="inductor", fullgraph=False, dynamic=False, mode=COMPILE_MODES[mode])
    start = time.perf_counter()
    with torch.no_grad():
        compiled()
        compiled()
    return compiled, time.perf_counter() - start


def _compiled_rep_merged(mode: str):
    def prepare(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
        spec = case.spec()
        kernels = merge_kernels(weight, spec)
        merged = [kernels.h, kernels.v, kernels.i]

        def forward():
            return merged_forward(x, kernels, spec, deterministic=False)

        with no_tf32():
            run, seconds = _compiled(forward, mode)
        return PreparedPeer(run, _conv_flops(x, merged), _bytes(x, merged, 3), seconds)

    return prepare


def shift_add_flops(spec: ShiftwiseSpec, shape: tuple[int, int, int, int]) -> int:
    """What a slice-and-add shift-add executes after the small conv: the conv of all C*nk kernels
    (pruned ones too) on the (H+2e) x (W+2e) positions, then one add per (group, slot) window
    and output element."""
    batch, channels, height, width = shape
    e = spec.extra_pad
    conv = 2 * spec.small_kernel**2 * channels * spec.nk * batch * (height + 2 * e) * (width + 2 * e)
    return conv + batch * channels * height * width * (2 * spec.groups * spec.nk + spec.groups)


def pytorch_shift_add() -> Implementation | None:
    """The shift-add written in plain PyTorch, by what implementations declare (``computes``
    SHIFT_ADD, ``role`` PYTORCH_WAY), the highest ``rank`` first (ties by name); None if none."""
    ways = [impl for impl in implementations().values()
            if impl.computes is Computes.SHIFT_ADD and impl.role is Role.PYTORCH_WAY]  # fmt: skip
    return min(ways, key=lambda impl: (-impl.rank, impl.name), default=None)


def _no_pytorch_shift_add(device: str) -> str | None:
    if pytorch_shift_add() is None:
        return "no implementation declares a PyTorch shift-add (computes=SHIFT_ADD, role=PYTORCH_WAY)"
    return None


def _compiled_shift_add(mode: str):
    def prepare(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
        spec = case.spec()
        shift_add = pytorch_shift_add().fn

        def forward():
            return shift_add(small_conv(x, weight, spec), spec)

        with no_tf32():
            run, seconds = _compiled(forward, mode)
        return PreparedPeer(run, shift_add_flops(spec, tuple(x.shape)), _bytes(x, [weight], 3), seconds)

    return prepare


def _random_kernels(case: Case, x: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(case.seed)
    return [
        torch.randn(case.channels, 1, rows, cols, generator=generator, dtype=torch.float64).to(x.dtype).to(x.device)
        for rows, cols in shapes
    ]


def _slak_strips(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
    m = case.big_kernel
    tall, wide, small = _random_kernels(case, x, [(m, 5), (5, m), (5, 5)])

    convs = [(tall, (2, 2, m // 2, m // 2)), (wide, (m // 2, m // 2, 2, 2)), (small, (2, 2, 2, 2))]

    def run() -> tuple[torch.Tensor, ...]:
        with no_tf32():
            return tuple(_depthwise(x, kernel, padding) for kernel, padding in convs)

    return PreparedPeer(run, _conv_flops(x, [tall, wide, small]), _bytes(x, [tall, wide, small], 3),
                        verify=checked_convs(x, convs))  # fmt: skip


def _unireplk(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
    (kernel,) = _random_kernels(case, x, [(13, 13)])

    def run() -> torch.Tensor:
        with no_tf32():
            return F.conv2d(x, kernel, padding=6, groups=x.shape[1])

    return PreparedPeer(run, _conv_flops(x, [kernel]), _bytes(x, [kernel], 1), verify=checked_convs(x, [(kernel, (6, 6, 6, 6))]))


#: Measured on the project's 2-core box (SW-tiny stage 1): an inductor compile per case's shape.
_COMPILE_COST = "inductor compiles per case shape (21 s for rep_merged, 58 s for the shift-add at SW-tiny stage 1 on a 2-core CPU)"


#: Why the lower-precision rows wait for the full tier.
_LOWER_PRECISION = "context rows in a lower precision, not the FP32 operator: timed by full runs and the GPU day's peers phase"


def peers() -> dict[str, Peer]:
    """Every peer, by name."""
    way, other, low = Role.PYTORCH_WAY, Role.OTHER_OPERATOR, Role.LOWER_PRECISION
    records = [
        Peer("rep_merged", "rep-merged reference: 3 depthwise convs (k x nk*k, nk*k x k, k x k), NCHW, exact F.pad",
             way, _rep_merged, baseline=True),
        Peer("rep_merged_sym", "the 3 merged convs, NCHW, strips zero-padded to centred k x (2R+1) and padding=",
             way, _merged_way("nchw", "symmetric")),
        Peer("rep_merged_cl", "the 3 merged convs, channels_last, centred zero-padded strips and padding=",
             way, _merged_way("channels_last", "symmetric")),
        Peer("rep_merged_cl_pad", "the 3 merged convs, channels_last, exact strips and F.pad",
             way, _merged_way("channels_last", "pad")),
        Peer("rep_cross", "one depthwise conv with the summed cross-shaped (2R+1)^2 kernel (the branches' sum)",
             way, _rep_cross, tier="full", tier_reason="a dense (2R+1)^2 kernel: 0.55 s a call at SW-tiny stage 1, B=4, on a 2-core CPU"),
        Peer("deployed_merged", "deployed merged form, NCHW: 2 depthwise convs (identity kernel, residual and branch scales "
             "folded into the centred strips, bias in the first) and an add: h + v + i + x", way, _deployed("nchw"), deployed=True),
        Peer("deployed_merged_cl", "deployed merged form, channels_last: 2 depthwise convs (identity kernel, residual and "
             "branch scales folded into the centred strips, bias in the first) and an add: h + v + i + x",
             way, _deployed("channels_last"), deployed=True),
        Peer("rep_merged_cl_bf16", "LOWER PRECISION (bfloat16, context, not the FP32 operator): the 3 merged convs, "
             "channels_last, centred strips, x and kernels in bfloat16", low, _lower_precision(torch.bfloat16),
             tier="full", tier_reason=_LOWER_PRECISION),
        Peer("rep_merged_cl_fp16", "LOWER PRECISION (float16, context, not the FP32 operator): the 3 merged convs, "
             "channels_last, centred strips, x and kernels in float16", low, _lower_precision(torch.float16),
             tier="full", tier_reason=_LOWER_PRECISION, unavailable=_no_fp16_on_cpu),
        Peer("compiled_rep_merged", "torch.compile (inductor, default mode) of rep_merged; compile time reported, not timed",
             way, _compiled_rep_merged("default"), tier="full", tier_reason=_COMPILE_COST, compiled=True),
        Peer("compiled_rep_merged_max", "torch.compile (inductor, max-autotune without cudagraphs) of rep_merged; compile "
             "time reported, not timed", way, _compiled_rep_merged("max-autotune"), tier="full", tier_reason=_COMPILE_COST, compiled=True),
        Peer("compiled_shift_add", "torch.compile (inductor, default mode) of the small conv + the PyTorch shift-add's slice-and-adds",
             way, _compiled_shift_add("default"), tier="full", tier_reason=_COMPILE_COST, unavailable=_no_pytorch_shift_add, compiled=True),
        Peer("compiled_shift_add_max", "torch.compile (inductor, max-autotune without cudagraphs) of the small conv + the "
             "PyTorch shift-add's slice-and-adds", way, _compiled_shift_add("max-autotune"), tier="full",
             tier_reason=_COMPILE_COST, unavailable=_no_pytorch_shift_add, compiled=True),
        Peer("slak_strips", "SLaK: M x 5 + 5 x M + 5 x 5 depthwise convs (another operator)", other, _slak_strips),
        Peer("unireplk_13x13", "UniRepLKNet: one 13 x 13 depthwise conv (another operator)", other, _unireplk),
    ]  # fmt: skip
    return {peer.name: peer for peer in records}
