"""The whole SW operator in Triton: the merged strips, clipped to the map, in two kernels.

``_sw_merge`` (one program per channel) sums the active small kernels each group puts at each
slot into the three merged depthwise kernels (``docs/semantics.md`` section 2), in group order,
pruned kernels left out by index (a -1 in the slot table masks their loads off: never a
multiply by 0, so NaN in their weights never takes part). ``_sw_strips`` then computes the
three depthwise cross-correlations: a program owns one BLOCK_H x BLOCK_W output tile of one
(b, c) plane and writes each of its outputs once. Each strip is a banded matrix product: for
row u of the horizontal strip, ``Oh[i, x] += sum_q X[i+u-k//2, q] * T_u[q, x]`` with
``T_u[q, x] = kh[c, u, q - x + M//2]`` (zero off the band), over the map columns q that the
tile's taps reach, BLOCK_K at a time (``tl.dot``); the vertical strip is its transpose; the
identity's k*k taps are a plain loop.

Why this form and not the two-stage gather: in Triton a register tile cannot be shifted
between threads except through memory, so the gather would either write the conv output y to
DRAM (nk times x's size, read back E*nk times, as cuda_atomic and numba_shared do) or
recompute each y_j per move (E times the merged form's multiply-adds). A tap-by-tap loop over
the strips (one shifted, masked load per multiply-add) compiled to 7 to 9 instructions per
FFMA; ``tl.dot`` keeps the tile in registers, stages X and T in shared memory and issues 1.5 to
2.5 per FFMA, at the price of the band's zeros (BLOCK_K columns per chunk, of which at most
BLOCK_K + BLOCK_W - 1 meet a tap). Clipping: the q range is cut to the map, so the taps that
only ever meet zero padding are never run (M=47 on a 14x14 map: one 16-wide chunk per row of
the strip instead of 48 taps).

Tiling: H and W are tiled (a 2-D output tile per program; W innermost, contiguous in NCHW, so a
warp's loads are coalesced); batch and channels are not (one plane per program: each channel
has its own merged kernel, so its band matrix T is shared by the tile's rows only). The
autotuner picks tile, chunk and warps per map size and strip length (``CONFIGS``; tiles more
than twice the map are pruned first; tl.dot needs 16 or more in every dimension). x's strides
are kernel arguments: strided and channels_last inputs are read in place (channels_last loads
are then strided across a warp: correct, not fast); the outputs are contiguous.

Arithmetic: products of x and merged weights accumulated in x's dtype, FMA contracted, ``tl.dot``
in IEEE precision (``input_precision="ieee"``: never TF32; fp64 is DMMA, also IEEE). Exact mode
is bit for bit (integer sums are exact in any order; adding a band zero is exact); float mode
is within ``error_bound`` (a merged tap shared by m kernels in a T-tap kernel meets
m + T - 1 <= n roundings, semantics.md section 5). The merge sums a slot's kernels in group
order, the order of the reference's accumulating ``index_put_``.

On the CPU the same kernels run in Triton's interpreter (numpy, one program after another):
the functions are wrapped as ``triton.runtime.interpreter.InterpretedFunction`` explicitly,
so nothing needs ``TRITON_INTERPRET=1`` before triton is imported and no process-wide state is
set (the interpreter patches ``triton.language`` only for the duration of a launch). On a GPU
they are ``triton.jit`` functions, autotuned, launched on torch's current stream. The kernels
report compiles them ahead of time with ``triton.compile(ASTSource, GPUTarget("cuda", 80|90,
32))`` (no GPU or driver) and reads registers and spills from Triton's own ptxas, run with
``-v`` and Triton's options on its PTX (``cudac.assemble_ptx``), whose cubin the SASS mix reads.

What the plug-in interface made hard (and what was changed): running on the CPU needed no new
interface once the kernels are wrapped as interpreted functions explicitly (``Execution``'s
``emulated`` already keeps those runs out of the timings); the one catch is that a kernel
must not call triton.language's own ``@jit`` helpers (``tl.zeros``, ``tl.cdiv``, ``tl.sum``):
those were made when triton was imported, interpreted only under ``TRITON_INTERPRET=1``, so
this file uses builtins (``tl.full``, integer arithmetic). The interpreter runs a program at a
time in Python, so the real-layer equivalence cases, sized for host builds, took minutes
each: ``tests/test_layers.py`` now leaves real layers to host builds among emulations, and
``tests/test_triton.py`` checks real layer shapes on a few channels. The kernels report wanted
``KernelFigures`` of a cubin the harness did not build, which ``cudac.with_sass`` already
takes; but its estimates add up every launch of a stage, and an autotuned kernel has several
builds of which one runs: each stage's launch is given to one config (named in the build
column), and ``kernel_table`` now refuses a kernel launched at a stage by two builds.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from harness import Branches, Computes, Execution, Implementation, ShiftwiseSpec, compulsory_bytes, cudac

#: (BLOCK_H, BLOCK_W, BLOCK_K, num_warps) the autotuner chooses from on a GPU (tl.dot needs 16+).
CONFIGS = ((16, 16, 16, 4), (16, 32, 32, 4), (32, 32, 16, 4), (32, 32, 32, 8), (32, 64, 32, 8))
#: The tile the interpreter runs (one config: autotuning there would only time numpy).
INTERPRETER_CONFIG = (32, 32, 32, 4)
INTERPRET_ENV = "TRITON_INTERPRET"
STRIPS_CONSTEXPRS = ("K", "BLOCK_H", "BLOCK_W", "BLOCK_K")
#: Marks, in the kernels report's build column, the config a stage's launch is given to (the
#: fewest issued instructions by the static count; the autotuner picks on a GPU).
STATIC_PICK = " [static pick]"
#: Multiply-adds contracted to FMA (Triton's default until 3.10; explicit, so every version
#: builds the same code): within the error bound, which allows any rounding order.
FP_FUSION = True
#: Warps of the merge kernel (one program per channel, at most a few hundred lanes).
MERGE_WARPS = 4


def _triton_missing() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton; the project's [test] extra has it)"
    return None


def _sw_strips(x_ptr, kh_ptr, kv_ptr, ki_ptr, oh_ptr, ov_ptr, oi_ptr, C, H, W, sxb, sxc, sxh, sxw, HALF, FAR,
               K: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """One (BLOCK_H x BLOCK_W) tile of plane (b, c) of all three branches. The strips' taps
    run over offsets -HALF .. FAR; kh is (C, K, L), kv (C, L, K), ki (C, K, K) with
    L = HALF + FAR + 1; outputs are contiguous (B, C, H, W).

    Each strip is a banded matrix product: for row u of the horizontal strip,
    Oh[i, x] += sum_q X[i + u - K//2, q] * T_u[q, x] with T_u[q, x] = kh[c, u, q - x + HALF]
    (zero off the band), q running over the map columns the tile's taps reach, BLOCK_K at a
    time; the vertical strip is the transpose. ``tl.dot`` in IEEE precision (never TF32)
    keeps the tile in registers and each x element feeds a row of outputs."""
    plane = tl.program_id(0)
    tile = tl.program_id(1)
    tiles_w = (W + BLOCK_W - 1) // BLOCK_W
    i0 = (tile // tiles_w) * BLOCK_H
    x0 = (tile % tiles_w) * BLOCK_W
    c = plane % C
    b = plane // C
    rows = i0 + tl.arange(0, BLOCK_H)[:, None]
    cols = x0 + tl.arange(0, BLOCK_W)[None, :]
    band = tl.arange(0, BLOCK_K)
    base = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
    length = HALF + FAR + 1
    r = K // 2
    dtype = oh_ptr.dtype.element_ty
    out = plane.to(tl.int64) * H * W + rows * W + cols
    inside = (rows < H) & (cols < W)
    # Horizontal strip: the map columns q that some output of the tile reads (clipped to the map).
    first = x0 - HALF
    if first < 0:
        first = 0
    last = x0 + BLOCK_W - 1 + FAR
    if last > W - 1:
        last = W - 1
    acc = tl.full((BLOCK_H, BLOCK_W), 0, dtype)
    for q0 in range(first, last + 1, BLOCK_K):
        q = q0 + band
        q_ok = q <= last
        offset = q[:, None] - cols + HALF  # (BLOCK_K, BLOCK_W): tap index q - x + HALF
        on_band = (offset >= 0) & (offset < length) & q_ok[:, None]
        for u in tl.static_range(K):
            src = rows + (u - r)
            xs = tl.load(base + src * sxh + q[None, :] * sxw, mask=(src >= 0) & (src < H) & q_ok[None, :], other=0.0)
            taps = tl.load(kh_ptr + (c * K + u) * length + offset, mask=on_band, other=0.0)
            acc = tl.dot(xs, taps, acc, input_precision="ieee", out_dtype=dtype)
    tl.store(oh_ptr + out, acc, mask=inside)
    # Vertical strip: the same along rows, Ov[i, x] += sum_p T_v[i, p] * X[p, x + v - K//2].
    first = i0 - HALF
    if first < 0:
        first = 0
    last = i0 + BLOCK_H - 1 + FAR
    if last > H - 1:
        last = H - 1
    acc = tl.full((BLOCK_H, BLOCK_W), 0, dtype)
    for p0 in range(first, last + 1, BLOCK_K):
        p = p0 + band
        p_ok = p <= last
        offset = p[None, :] - rows + HALF  # (BLOCK_H, BLOCK_K)
        on_band = (offset >= 0) & (offset < length) & p_ok[None, :]
        for v in tl.static_range(K):
            src = cols + (v - r)
            xs = tl.load(base + p[:, None] * sxh + src * sxw, mask=p_ok[:, None] & (src >= 0) & (src < W), other=0.0)
            taps = tl.load(kv_ptr + (c * length + offset) * K + v, mask=on_band, other=0.0)
            acc = tl.dot(taps, xs, acc, input_precision="ieee", out_dtype=dtype)
    tl.store(ov_ptr + out, acc, mask=inside)
    # Identity: the centred K x K kernel, tap by tap.
    acc = tl.full((BLOCK_H, BLOCK_W), 0, dtype)
    for u in tl.static_range(K):
        src_rows = rows + (u - r)
        row_ok = (src_rows >= 0) & (src_rows < H)
        for v in tl.static_range(K):
            src_cols = cols + (v - r)
            tap = tl.load(base + src_rows * sxh + src_cols * sxw, mask=row_ok & (src_cols >= 0) & (src_cols < W), other=0.0)
            acc += tl.load(ki_ptr + (c * K + u) * K + v) * tap
    tl.store(oi_ptr + out, acc, mask=inside)


def _sw_merge(w_ptr, table_ptr, kh_ptr, kv_ptr, ki_ptr, NK, E, K: tl.constexpr, TAPS: tl.constexpr):
    """Program c: channel c's three merged kernels. table is (3, E, C, NK) int32: [0, g, c, t] /
    [1, g, c, t] the flat small kernel (c*nk + j) that group g puts at horizontal / vertical
    slot t, [2, g, c, 0] its identity kernel; -1 where that kernel is pruned. A lane holds tap
    (u, v) of slot t (TAPS >= NK*K*K, a power of two); a slot's kernels are summed in group order."""
    c = tl.program_id(0)
    C = tl.num_programs(0)
    lane = tl.arange(0, TAPS)
    t = lane // (K * K)
    u = (lane // K) % K
    v = lane % K
    inside = t < NK
    length = NK * K
    dtype = kh_ptr.dtype.element_ty
    acc_h = tl.full((TAPS,), 0, dtype)
    acc_v = tl.full((TAPS,), 0, dtype)
    acc_i = tl.full((TAPS,), 0, dtype)
    tap = u * K + v
    first = t == 0
    for g in range(E):
        # A pruned kernel (-1) is never read: its lanes' loads are masked off.
        flat = tl.load(table_ptr + (g * C + c) * NK + t, mask=inside, other=-1)
        acc_h += tl.load(w_ptr + flat * (K * K) + tap, mask=flat >= 0, other=0.0)
        flat = tl.load(table_ptr + ((E + g) * C + c) * NK + t, mask=inside, other=-1)
        acc_v += tl.load(w_ptr + flat * (K * K) + tap, mask=flat >= 0, other=0.0)
        flat = tl.load(table_ptr + ((2 * E + g) * C + c) * NK + t, mask=first, other=-1)
        acc_i += tl.load(w_ptr + flat * (K * K) + tap, mask=flat >= 0, other=0.0)
    # Tap (u, v) of slot t: kh[c, u, t*K + v]; kv[c, t*K + u, v] (stacked, not transposed).
    tl.store(kh_ptr + (c * K + u) * length + t * K + v, acc_h, mask=inside)
    tl.store(kv_ptr + (c * length + t * K + u) * K + v, acc_v, mask=inside)
    tl.store(ki_ptr + c * K * K + tap, acc_i, mask=first)


# The kernels' bodies read ``tl`` as a module global: bound by _triton() on first use, so that
# importing this file (as discovery does) does not import triton.
tl = None


@functools.lru_cache(maxsize=None)
def _triton():
    global tl
    import triton
    import triton.language

    tl = triton.language
    return triton


def _prune(configs, named_args, **kwargs):
    """Drop tiles more than twice as large as the map in either direction (all masked lanes),
    keeping at least the smallest."""
    height, width = named_args["H"], named_args["W"]
    kept = [c for c in configs if c.kwargs["BLOCK_H"] <= 2 * max(8, height) and c.kwargs["BLOCK_W"] <= 2 * max(8, width)]
    return kept or configs[:1]


@functools.lru_cache(maxsize=None)
def _kernels(interpreted: bool):
    """(strips, merge) kernels: InterpretedFunction on the CPU, autotuned JIT on a GPU."""
    triton = _triton()
    if interpreted:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(_sw_strips), InterpretedFunction(_sw_merge)
    strips = triton.jit(_sw_strips, do_not_specialize=["C", "sxb", "sxc", "HALF", "FAR"])
    tuned = triton.autotune(
        [triton.Config({"BLOCK_H": h, "BLOCK_W": w, "BLOCK_K": k}, num_warps=warps) for h, w, k, warps in CONFIGS],
        key=["H", "W", "HALF", "FAR", "K"],
        prune_configs_by={"early_config_prune": _prune},
    )(strips)
    return tuned, triton.jit(_sw_merge)


@functools.lru_cache(maxsize=64)
def slot_table(spec: ShiftwiseSpec) -> np.ndarray:
    """(3, E, C, nk) int32: the flat kernel each group puts at each horizontal / vertical slot,
    and (at [2, g, c, 0]) each group's identity kernel; -1 for a pruned one."""
    e, c, nk = spec.groups, spec.channels, spec.nk
    table = np.full((3, e, c, nk), -1, dtype=np.int32)
    flat = np.arange(c)[:, None] * nk + np.arange(nk)[None, :]
    for branch, slots in enumerate((spec.slot_h, spec.slot_v)):
        for g in range(e):
            placed = np.full((c, nk), -1, dtype=np.int32)
            np.put_along_axis(placed, slots[g], np.where(spec.active, flat, -1), axis=1)
            table[branch, g] = placed
    ident_flat = np.arange(c)[None, :] * nk + spec.ident
    table[2, :, :, 0] = np.where(spec.active[np.arange(c)[None, :], spec.ident], ident_flat, -1)
    return table


@functools.lru_cache(maxsize=64)
def _device_table(spec: ShiftwiseSpec, device: torch.device) -> torch.Tensor:
    return torch.tensor(slot_table(spec), device=device)


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def merged_kernels(weight: torch.Tensor, spec: ShiftwiseSpec, interpreted: bool) -> tuple[torch.Tensor, ...]:
    """(kh (C, k, L), kv (C, L, k), ki (C, k, k)) in weight's dtype, by ``_sw_merge``."""
    c, nk, k = spec.channels, spec.nk, spec.small_kernel
    length = nk * k
    kh = weight.new_empty(c, k, length)
    kv = weight.new_empty(c, length, k)
    ki = weight.new_empty(c, k, k)
    _, merge = _kernels(interpreted)
    options = {} if interpreted else {"num_warps": MERGE_WARPS, "enable_fp_fusion": FP_FUSION}
    merge[(c,)](weight.contiguous(), _device_table(spec, weight.device), kh, kv, ki, nk, spec.groups,
                K=k, TAPS=_next_power_of_two(nk * k * k), **options)  # fmt: skip
    return kh, kv, ki


def forward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    interpreted = x.device.type == "cpu"
    batch, channels, height, width = x.shape
    kh, kv, ki = merged_kernels(weight, spec, interpreted)
    out_h, out_v, out_i = (x.new_empty(batch, channels, height, width) for _ in range(3))
    strips, _ = _kernels(interpreted)
    half, far = _offsets(spec)
    args = (x, kh, kv, ki, out_h, out_v, out_i, channels, height, width, *x.stride(), half, far)
    if interpreted:
        block_h, block_w, block_k, _ = INTERPRETER_CONFIG
        grid = (batch * channels, -(-height // block_h) * -(-width // block_w))
        strips[grid](*args, K=spec.small_kernel, BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_K=block_k)
    else:
        grid = lambda meta: (batch * channels, -(-height // meta["BLOCK_H"]) * -(-width // meta["BLOCK_W"]))  # noqa: E731
        strips[grid](*args, K=spec.small_kernel, enable_fp_fusion=FP_FUSION)
    return Branches(out_h, out_v, out_i)


def _offsets(spec: ShiftwiseSpec) -> tuple[int, int]:
    """(HALF, FAR): the strips' taps run over offsets -HALF .. FAR (FAR > HALF when k does not divide M)."""
    half = spec.big_kernel // 2
    return half, spec.nk * spec.small_kernel - 1 - half


def _execution(device: torch.device) -> Execution:
    missing = _triton_missing()
    if device.type == "cpu":
        mode = "Triton's interpreter (numpy, one program at a time): for checking only, never benchmarked"
        return Execution(mode, missing, emulated=True)
    mode = "Triton JIT, autotuned, on torch's current stream"
    if missing is None and os.environ.get(INTERPRET_ENV, "0") not in ("", "0"):
        missing = f"{INTERPRET_ENV}={os.environ[INTERPRET_ENV]}: triton.jit would interpret this process's kernels, not compile them"
    return Execution(mode, missing)


# ----------------------------------------------------------------------------- traffic and figures
def _band_chunks(spec: ShiftwiseSpec, start: int, block: int, extent: int, block_k: int) -> int:
    """BLOCK_K chunks of map rows (columns) a tile starting at ``start`` multiplies its strip
    with: the kernel's clipped range, in whole chunks."""
    half, far = _offsets(spec)
    first, last = max(start - half, 0), min(start + block - 1 + far, extent - 1)
    return max(0, -(-(last - first + 1) // block_k))


def executed_fma(spec: ShiftwiseSpec, shape, config) -> int:
    """Multiply-adds the strips kernel executes for input ``shape`` in ``config`` (masked lanes
    and the band's zeros included: a GPU runs them): per tile, k dots of BLOCK_H x BLOCK_W x
    BLOCK_K per chunk of each strip, and k*k per output for the identity."""
    batch, channels, height, width = shape
    block_h, block_w, block_k, _ = config
    k = spec.small_kernel
    chunks = 0
    for i0 in range(0, height, block_h):
        vertical = _band_chunks(spec, i0, block_h, height, block_k)
        for x0 in range(0, width, block_w):
            chunks += k * (_band_chunks(spec, x0, block_w, width, block_k) + vertical)
    tiles = -(-height // block_h) * -(-width // block_w)
    return batch * channels * block_h * block_w * (chunks * block_k + tiles * k * k)


def traffic(spec: ShiftwiseSpec, shape, itemsize: int) -> int:
    """Compulsory bytes (x read once: a tile's halo re-reads hit L1/L2), the merged kernels
    written once and read once per plane's first tile, in place of the official tables our
    slot table (int32)."""
    batch, channels, height, width = shape
    k, length = spec.small_kernel, spec.nk * spec.small_kernel
    merged = channels * (2 * k * length + k * k) * itemsize
    official_tables = 4 * (channels * spec.nk * 2 * spec.groups + channels * spec.groups) + channels * spec.nk
    return compulsory_bytes(spec, shape, itemsize) - official_tables + slot_table(spec).nbytes + 2 * merged


def _signature(names, pointer: str) -> dict:
    return {name: pointer if name.endswith("_ptr") else "i32" for name in names}


def _compile(fn, signature: dict, constexprs: dict, arch: str, num_warps: int):
    """A Triton kernel compiled ahead of time for ``arch`` (no GPU, no driver)."""
    triton = _triton()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    jitted = JITFunction(fn)
    source = ASTSource(jitted, {**signature, **{name: "constexpr" for name in constexprs}}, constexprs=constexprs)
    options = {"num_warps": num_warps, "enable_fp_fusion": FP_FUSION}
    return triton.compile(source, target=GPUTarget("cuda", int(arch.removeprefix("sm_")), 32), options=options)


def _ptxas(arch: str) -> tuple[str, list[str]]:
    """The ptxas Triton assembles ``arch`` with (its own: one for sm_80, a newer one from sm_90
    on) and its options (``make_cubin`` in triton/backends/nvidia/compiler.py), so the figures
    and the SASS are of the cubin Triton builds."""
    triton = _triton()
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        path = get_ptxas(int(arch.removeprefix("sm_"))).path
    except (ImportError, TypeError, AttributeError):  # releases with one ptxas
        path = str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas")
    return path, ["-lineinfo", "--regAllocOptLevel=2", *([] if FP_FUSION else ["--fmad=false"])]


def _built(fn, signature: dict, constexprs: dict, arch: str, num_warps: int, kernel: str):
    """(compiled kernel, ptxas figures, SASS) of one ahead-of-time build."""
    compiled = _compile(fn, signature, constexprs, arch, num_warps)
    path, options = _ptxas(arch)
    figures, cubin = cudac.assemble_ptx(compiled.asm["ptx"], arch, ptxas=path, options=options)
    ((_, ptxas),) = figures.items()
    (sass,) = cudac.kernel_sass(cubin).values()
    return compiled, dataclasses.replace(ptxas, kernel=kernel), sass


def kernel_figures(arch: str) -> list:
    """ptxas and SASS figures of both kernels (float32, k=3) built ahead of time for ``arch``:
    the strips kernel in every autotuning config and the merge kernel, with their launches on
    the SW-tiny stages. Which config runs at a stage is the autotuner's choice on a GPU; here
    each stage's launch is given to the config that issues the fewest instructions there by
    the static count (multiply-adds it executes, masked lanes and band zeros included, times
    its hot loop's instructions per FFMA): a stand-in, named as such in the build column."""
    _triton()
    strips_names = [n for n in _sw_strips.__code__.co_varnames[: _sw_strips.__code__.co_argcount] if n not in STRIPS_CONSTEXPRS]
    merge_names = ["w_ptr", "table_ptr", "kh_ptr", "kv_ptr", "ki_ptr", "NK", "E"]
    stages = cudac.report_stages()
    builds = {}
    for config in CONFIGS:
        block_h, block_w, block_k, warps = config
        constexprs = {"K": 3, "BLOCK_H": block_h, "BLOCK_W": block_w, "BLOCK_K": block_k}
        builds[config] = _built(_sw_strips, _signature(strips_names, "*fp32"), constexprs, arch, warps, "sw_strips")
    launches = {config: [] for config in CONFIGS}
    for case, spec, shape in stages:
        batch, channels, height, width = shape
        cost = {config: executed_fma(spec, shape, config) * (cudac.with_sass(ptxas, sass).per_fma or (1.0, 0.0))[0]
                for config, (_, ptxas, sass) in builds.items()}  # fmt: skip
        config = min(CONFIGS, key=lambda c: (cost[c], CONFIGS.index(c)))
        block_h, block_w, _, warps = config
        grid = batch * channels * -(-height // block_h) * -(-width // block_w)
        shared = builds[config][0].metadata.shared
        launches[config].append(cudac.Launch(case, grid, (32 * warps,), shared, executed_fma(spec, shape, config), 0))
    figures = []
    for config, (_, ptxas, sass) in builds.items():
        block_h, block_w, block_k, warps = config
        build = f"BLOCK_H={block_h} BLOCK_W={block_w} BLOCK_K={block_k} num_warps={warps}"
        if launches[config]:
            build += STATIC_PICK
        figures.append(cudac.with_sass(ptxas, sass, launches[config], build))
    signature = {**_signature(merge_names, "*fp32"), "table_ptr": "*i32"}
    by_taps: dict[int, list] = {}
    for case, spec, _ in stages:
        by_taps.setdefault(_next_power_of_two(spec.nk * 9), []).append((case, spec))
    for taps, chosen in sorted(by_taps.items()):
        compiled, ptxas, sass = _built(_sw_merge, signature, {"K": 3, "TAPS": taps}, arch, MERGE_WARPS, "sw_merge")
        merges = [cudac.Launch(case, spec.channels, (32 * MERGE_WARPS,), compiled.metadata.shared, 0, 3 * spec.groups * spec.channels * taps)
                  for case, spec in chosen]  # fmt: skip
        figures.append(cudac.with_sass(ptxas, sass, merges, f"TAPS={taps} num_warps={MERGE_WARPS}"))
    return figures


IMPLEMENTATION = Implementation(
    name="triton_sw",
    fn=forward,
    computes=Computes.OPERATOR,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    description="Triton: the merged strips clipped to the map (a merge kernel, then one tile per program, all three branches), autotuned",
    execution=_execution,
    traffic=traffic,
    kernel_figures=kernel_figures,
)
