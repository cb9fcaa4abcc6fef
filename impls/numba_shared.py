"""Shift-and-add with shared memory and no global atomics (appendix B.2), in Numba CUDA.

Two kernels take the small conv's output ``y`` (the harness runs the conv):

- ``rows_kernel``: one block per output row (b, c, i). It stages in shared memory the row
  ``i + e`` of every small kernel of channel c that some group puts at an in-map slot, then each
  thread gathers its outputs' E*nk horizontal moves from shared memory (and the E identity
  moves), and writes ``Oh`` and ``Oi`` once.
- ``columns_kernel``: one block per tile of ``tile`` output columns (b, c, x0..): it stages the
  needed kernels' columns ``x0 + e ..`` over the full height, and gathers the vertical moves.

Pruned kernels and slots whose shift puts them wholly outside the map are dropped on the host
(``harness.moves``), so they cost neither staging nor moves. The sums are gathers in a fixed
order: results are deterministic. On a GPU the kernels run on torch tensors through the CUDA
array interface on torch's current stream; without one they run, unchanged, in Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1`` before numba is imported), which is only for checking.
"""

from __future__ import annotations

import functools
import os

import torch

from harness import Branches, Computes, Execution, Implementation, ShiftwiseSpec, compulsory_bytes, conv_output_elements, cudac, move_tables

SIMULATOR_ENV = "NUMBA_ENABLE_CUDASIM"
cuda = None  # numba.cuda, bound by _kernels() on first use
#: Threads per block; rows and column tiles loop when they are longer.
BLOCK = 128
#: Shared memory one block may use (the default per-block limit on sm_80 and sm_90).
SHARED_LIMIT = cudac.SHARED_LIMIT


def _simulated() -> bool:
    return os.environ.get(SIMULATOR_ENV) == "1"


@functools.lru_cache(maxsize=None)
def _kernels(dtype_name: str):
    """Compile-on-first-use kernels for one dtype (numba is imported only here)."""
    # The kernels must see `cuda` as a module global: Numba's simulator runs them with that
    # global swapped for its fake module. Bound on first use, so importing this file (as
    # discovery does) neither imports numba nor fixes simulator-or-not for the process.
    global cuda
    from numba import cuda, float32, float64, int32, uint32

    scalar = {"float32": float32, "float64": float64}[dtype_name]
    # Shared memory: the channel's moves as int32 (padded to 8 bytes), then the staged y of
    # `scalar`; both dynamic arrays alias the launch's shared memory.
    per_int = {"float32": 1, "float64": 2}[dtype_name]  # int32 slots per scalar

    @cuda.jit
    def rows_kernel(y, out_h, out_i, rows, moves, identity, extra_pad):
        # y: (B, C*nk, Hy, Wy); rows: (C, R) kernels to stage, -1 padded;
        # moves: (C, Mh, 2) (shared row, shift), -1 padded; identity: (C, E) flat kernel or -1.
        batch, channels, height, width = out_h.shape
        nk = y.shape[1] // channels
        wy = int32(y.shape[3])
        block = cuda.blockIdx.x
        i = block % height
        c = (block // height) % channels
        b = block // (height * channels)
        tid, threads = cuda.threadIdx.x, cuda.blockDim.x
        table = cuda.shared.array(0, dtype=int32)
        staged = cuda.shared.array(0, dtype=scalar)
        n_moves = int32(moves.shape[1])
        base = int32((2 * n_moves + 1) // 2 * 2 // per_int)  # first staged scalar
        for t in range(tid, 2 * n_moves, threads):
            table[uint32(t)] = moves[c, t // 2, t % 2]
        for r in range(rows.shape[1]):
            j = rows[c, r]
            if j < 0:
                break
            for q in range(tid, wy, threads):
                staged[uint32(base + r * wy + q)] = y[b, c * nk + j, i + extra_pad, q]
        cuda.syncthreads()
        for x in range(tid, width, threads):
            xi = int32(x)
            acc = scalar(0)
            for m in range(n_moves):
                r = table[uint32(2 * m)]
                if r < 0:
                    break
                q = int32(xi - table[uint32(2 * m + 1)])  # Oh[i, x] reads y[i + e, x - s]
                if uint32(q) < uint32(wy):
                    acc += staged[uint32(base + r * wy + q)]
            out_h[b, c, i, x] = acc
            acc = scalar(0)
            for g in range(identity.shape[1]):
                kernel = identity[c, g]
                if kernel >= 0:
                    acc += y[b, kernel, i + extra_pad, x + extra_pad]
            out_i[b, c, i, x] = acc

    @cuda.jit
    def columns_kernel(y, out_v, columns, moves, extra_pad, tile):
        # One block per (b, c, tile of `tile` output columns); staged[r, a, t] = y[.., a, x0 + t + e].
        batch, channels, height, width = out_v.shape
        nk = y.shape[1] // channels
        hy = int32(y.shape[2])
        tiles = (width + tile - 1) // tile
        block = cuda.blockIdx.x
        x0 = (block % tiles) * tile
        c = (block // tiles) % channels
        b = block // (tiles * channels)
        tid, threads = cuda.threadIdx.x, cuda.blockDim.x
        table = cuda.shared.array(0, dtype=int32)
        staged = cuda.shared.array(0, dtype=scalar)
        n_moves = int32(moves.shape[1])
        base = int32((2 * n_moves + 1) // 2 * 2 // per_int)
        span = int32(min(tile, width - x0))
        tile32 = int32(tile)
        for t in range(tid, 2 * n_moves, threads):
            table[uint32(t)] = moves[c, t // 2, t % 2]
        for r in range(columns.shape[1]):
            j = columns[c, r]
            if j < 0:
                break
            for flat in range(tid, hy * span, threads):
                a = int32(flat // span)
                t = int32(flat - a * span)
                staged[uint32(base + (r * hy + a) * tile32 + t)] = y[b, c * nk + j, a, x0 + t + extra_pad]
        cuda.syncthreads()
        for flat in range(tid, height * span, threads):
            i = int32(flat // span)
            t = int32(flat - i * span)
            acc = scalar(0)
            for m in range(n_moves):
                r = table[uint32(2 * m)]
                if r < 0:
                    break
                a = int32(i - table[uint32(2 * m + 1)])  # Ov[i, x] reads y[i - s, x + e]
                if uint32(a) < uint32(hy):
                    acc += staged[uint32(base + (r * hy + a) * tile32 + t)]
            out_v[b, c, i, x0 + t] = acc

    return rows_kernel, columns_kernel


def _table_bytes(moves: int) -> int:
    """The int32 moves staged before the rows/columns, padded to 8 bytes."""
    return 4 * -(-2 * moves // 2) * 2


def column_tile(staged_kernels: int, hy: int, itemsize: int, moves: int = 0) -> int:
    """Widest tile (<= 32 columns, a power of two) whose staged columns fit in shared memory."""
    tile = cudac.widest_tile(lambda tile: _table_bytes(moves) + max(1, staged_kernels) * hy * tile * itemsize)
    if tile is None:
        raise ValueError(
            f"numba_shared: {staged_kernels} staged columns of height {hy} exceed {SHARED_LIMIT} bytes of shared memory"
        )
    return tile


def launch_plan(spec: ShiftwiseSpec, shape, itemsize: int) -> dict:
    """Grid, block and dynamic shared memory of both kernels for input ``shape``, and the
    column tile; a ValueError when a row does not fit in shared memory."""
    batch, channels, height, width = shape
    e = spec.extra_pad
    hy, wy = height + 2 * e, width + 2 * e
    tables = move_tables(spec, height, width)
    rows_bytes = _table_bytes(tables.row_moves.shape[1]) + tables.rows.shape[1] * wy * itemsize
    if rows_bytes > SHARED_LIMIT:
        raise ValueError(
            f"numba_shared: {tables.rows.shape[1]} staged rows of width {wy} exceed {SHARED_LIMIT} bytes of shared memory"
        )
    tile = column_tile(tables.columns.shape[1], hy, itemsize, tables.column_moves.shape[1])
    columns_bytes = _table_bytes(tables.column_moves.shape[1]) + tables.columns.shape[1] * hy * tile * itemsize
    return {
        "rows": (batch * channels * height, min(BLOCK, 32 * -(-width // 32)), rows_bytes),
        "columns": (batch * channels * -(-width // tile), min(BLOCK, 32 * -(-(height * tile) // 32)), columns_bytes),
        "tile": tile,
    }


def shift_add(y: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    from numba import cuda

    y = y.contiguous()
    e = spec.extra_pad
    batch, _, hy, wy = y.shape
    height, width = hy - 2 * e, wy - 2 * e
    plan = launch_plan(spec, (batch, spec.channels, height, width), y.element_size())
    out_h, out_v, out_i = (y.new_empty(batch, spec.channels, height, width) for _ in range(3))

    if _simulated():  # the simulator works on host arrays: zero-copy numpy views of CPU tensors
        view = lambda t: t.detach().numpy()  # noqa: E731
        stream = 0
    else:
        view = lambda t: cuda.as_cuda_array(t.detach())  # noqa: E731 (torch refuses the interface for tensors requiring grad)
        stream = cuda.external_stream(torch.cuda.current_stream(y.device).cuda_stream)
    tables = cudac.device_move_tables(spec, height, width, y.device)

    rows_kernel, columns_kernel = _kernels(str(y.dtype).removeprefix("torch."))
    grid, threads, shared = plan["rows"]
    rows_kernel[grid, threads, stream, shared](
        view(y), view(out_h), view(out_i), view(tables["rows"]), view(tables["row_moves"]), view(tables["identity"]), e
    )
    grid, threads, shared = plan["columns"]
    columns_kernel[grid, threads, stream, shared](
        view(y), view(out_v), view(tables["columns"]), view(tables["column_moves"]), e, plan["tile"]
    )
    return Branches(out_h, out_v, out_i)


def _execution(device: torch.device) -> Execution:
    if device.type == "cpu":
        mode, emulated = "Numba's CUDA simulator: for checking only, never benchmarked", True
    else:
        mode, emulated = "numba-cuda on torch's current stream (CUDA array interface)", False
    try:
        import numba_cuda  # noqa: F401
    except ImportError as error:
        return Execution(mode, f"numba-cuda is not installed ({error})", emulated)
    if device.type == "cpu" and not _simulated():
        reason = f"runs on the CPU only in Numba's CUDA simulator ({SIMULATOR_ENV}=1 before numba is imported)"
        return Execution(mode, reason, emulated)
    if device.type == "cuda" and _simulated():
        return Execution(mode, f"{SIMULATOR_ENV}=1: this process runs Numba's CUDA simulator, not the GPU", emulated)
    if device.type == "cuda":
        return Execution(mode, _nvvm_missing() or nvjitlink_missing(), emulated)
    return Execution(mode, None, emulated)


def _nvvm_missing() -> str | None:
    """Why numba-cuda has no NVVM to compile kernels with, or None (probed once: without it the
    first launch would fail, so the implementation is unavailable with this reason instead)."""
    return _nvvm_probe()


@functools.lru_cache(maxsize=None)
def _nvvm_probe() -> str | None:
    try:
        from numba.cuda.cudadrv import nvvm

        if nvvm.is_available():
            return None
        nvvm.NVVM()  # not available: its error names what is missing
    except Exception as error:
        return f"NVVM is not usable by numba-cuda ({type(error).__name__}: {error}); install nvidia-nvvm or a CUDA toolkit"
    return "NVVM is not usable by numba-cuda (numba.cuda.cudadrv.nvvm.is_available() is False); install nvidia-nvvm"


def nvjitlink_missing() -> str | None:
    """Why kernels could not be linked here, or None. NVVM from the nvidia-nvvm wheel emits PTX
    of its own (newer) ISA, which an older driver refuses to JIT ("unsupported PTX version");
    with nvJitLink at least as new as NVVM, numba-cuda links kernels to a cubin itself (LTO)
    and the driver only loads machine code."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        from cuda.bindings import nvjitlink

        linker = nvjitlink.version()
    except Exception as error:  # missing wheel or library
        return f"nvJitLink is not usable ({type(error).__name__}: {error}); install nvidia-nvjitlink at nvidia-nvvm's version"
    try:
        nvvm = tuple(int(p) for p in version("nvidia-nvvm").split(".")[:2])
    except PackageNotFoundError:
        return None  # NVVM from a CUDA toolkit: its own nvJitLink matches
    if tuple(linker[:2]) < nvvm:
        return f"nvJitLink {linker[0]}.{linker[1]} is older than NVVM {nvvm[0]}.{nvvm[1]}; install nvidia-nvjitlink>={nvvm[0]}.{nvvm[1]}"
    return None


def traffic(spec: ShiftwiseSpec, shape, itemsize: int) -> int:
    """Compulsory bytes, plus y written once by the conv, and read: each staged row once per
    output row (horizontal), each staged column once per column tile (vertical), and the E
    identity picks per output pixel."""
    batch, channels, height, width = shape
    e = spec.extra_pad
    tables = move_tables(spec, height, width)
    y_reads = batch * (
        tables.staged_rows * height * (width + 2 * e)
        + tables.staged_columns * (height + 2 * e) * width
        + int((tables.identity >= 0).sum()) * height * width
    )
    return compulsory_bytes(spec, shape, itemsize) + itemsize * (conv_output_elements(spec, shape) + y_reads)


def shared_sites(spec: ShiftwiseSpec, shape) -> dict[str, list]:
    """Every shared-memory access of both kernels over one launch, by kernel, their index
    expressions replayed for the 32 lanes of each warp (``harness.cudac.banks``); lanes of a
    warp in lockstep, a lane whose guard fails inactive; channels alike replayed once, weighted."""
    from collections import Counter

    import numpy as np

    banks = cudac.banks

    batch, channels, height, width = shape
    e = spec.extra_pad
    hy, wy = height + 2 * e, width + 2 * e
    plan, tables = launch_plan(spec, shape, 4), move_tables(spec, height, width)

    def at(words, active):
        return np.where(active, 4 * words, -1).reshape(-1, 32)

    out = {}
    for name, staged_table, move_table, extent in (("rows_kernel", tables.rows, tables.row_moves, None),
                                                   ("columns_kernel", tables.columns, tables.column_moves, plan["tile"])):  # fmt: skip
        grid, threads, _ = plan[name.removesuffix("_kernel")]
        tid, valid = banks.warps_of(threads)
        n_moves = move_table.shape[1]
        base = 2 * n_moves  # (2 * n_moves + 1) // 2 * 2 int32 words, as the kernel computes it
        t, active = banks.strided(tid, valid, 2 * n_moves, threads)
        sites = [banks.site("stage moves", "st", at(t, active), grid)]
        staged = Counter(int((staged_table[c] >= 0).sum()) for c in range(channels))
        moves = Counter((int(m), int(s)) for c in range(channels) for m, s in move_table[c] if m >= 0)
        spans = [width] if extent is None else [min(extent, width - x0) for x0 in range(0, width, extent)]
        for span in sorted(set(spans)):
            blocks = batch * (height if extent is None else spans.count(span))  # per channel
            line = wy if extent is None else hy * span
            t, active = banks.strided(tid, valid, line, threads)
            for r in range(max(staged)):
                having = sum(times for count, times in staged.items() if count > r)
                if extent is None:
                    words = base + r * wy + t
                else:
                    a = t // span
                    words = base + (r * hy + a) * extent + (t - a * span)
                sites.append(banks.site("stage y", "st", at(words, active), blocks * having))
            t, active = banks.strided(tid, valid, width if extent is None else height * span, threads)
            sites.append(banks.site("gather: moves", "ld", at(0 * t, active), blocks * 2 * sum(moves.values())))
            for (m, shift), times in moves.items():
                if extent is None:
                    q = t - shift
                    words, ok = base + m * wy + q, (q >= 0) & (q < wy)
                else:
                    i = t // span
                    a = i - shift
                    words, ok = base + (m * hy + a) * extent + (t - i * span), (a >= 0) & (a < hy)
                sites.append(banks.site("gather: y", "ld", at(words, active & ok), blocks * times))
        out[name] = banks.merge(sites)
    return out


def launch_bytes(spec: ShiftwiseSpec, shape, itemsize: int) -> dict[str, tuple[int, tuple]]:
    """(DRAM bytes with a cold L2, re-reads as (bytes, working set)) of each kernel: the rows
    kernel reads the staged y rows and the identity picks (from the rows a block just staged,
    or beside them: re-reads) and writes Oh and Oi; the columns kernel reads the staged y
    columns (y read again, after the whole of it went by) and writes Ov. The rest of
    ``traffic`` (x, the weights, y written) is the small conv's, in PyTorch."""
    batch, channels, height, width = shape
    e = spec.extra_pad
    tables = move_tables(spec, height, width)
    plane = itemsize * batch * channels * height * width
    rows = itemsize * batch * tables.staged_rows * height * (width + 2 * e)
    identity = itemsize * batch * int((tables.identity >= 0).sum()) * height * width
    columns = itemsize * batch * tables.staged_columns * (height + 2 * e) * width
    y = itemsize * conv_output_elements(spec, shape)
    return {"rows_kernel": (rows + identity + 2 * plane, ((identity, 0),)), "columns_kernel": (columns + plane, ((columns, y),))}


def kernel_figures(arch: str):
    """ptxas and SASS figures of both kernels (float32), with their launches on each SW-tiny
    stage: PTX from ``numba.cuda.compile_ptx`` (NVVM from the nvidia-nvvm wheel), assembled by
    ptxas from the nvidia-cuda-nvcc wheel (``cudac.assemble_ptx``), disassembled by nvdisasm."""
    if _simulated():
        raise RuntimeError("kernel figures need real Numba CUDA compilation, not the simulator")
    from numba import cuda

    cc = (int(arch[3:-1]), int(arch[-1]))
    rows_kernel, columns_kernel = _kernels("float32")
    index = "int32[:, ::1]"
    signatures = {
        "rows_kernel": f"(float32[:, :, :, ::1], float32[:, :, :, ::1], float32[:, :, :, ::1], {index}, int32[:, :, ::1], {index}, int64)",
        "columns_kernel": f"(float32[:, :, :, ::1], float32[:, :, :, ::1], {index}, int32[:, :, ::1], int64, int64)",
    }
    launches = {"rows_kernel": [], "columns_kernel": []}
    for case, spec, shape in cudac.report_stages():
        plan = launch_plan(spec, shape, 4)
        horizontal, vertical, identity = cudac.branch_moves(spec, shape[2], shape[3])
        sites = shared_sites(spec, shape)
        for name, adds in (("rows_kernel", horizontal + identity), ("columns_kernel", vertical)):
            grid, threads, shared = plan[name.removesuffix("_kernel")]
            dram, reuse = launch_bytes(spec, shape, 4)[name]
            launches[name].append(cudac.Launch(case, grid, (threads,), shared, 0, shape[0] * adds, shared_sites=tuple(sites[name]),
                                               barriers_per_block=1, dram_bytes=dram, reuse=reuse))  # fmt: skip
    figures = []
    for name, kernel in (("rows_kernel", rows_kernel), ("columns_kernel", columns_kernel)):
        ptx, _ = cuda.compile_ptx(kernel.py_func, signatures[name], cc=cc)
        found, code = cudac.assemble_ptx(ptx, arch)
        ((_, entry),) = found.items()
        (sass,) = cudac.kernel_sass(code).values()
        ptxas_figures = entry.__class__(**{**vars(entry), "kernel": name})
        figures.append(cudac.with_sass(ptxas_figures, sass, launches[name]))
    return figures


IMPLEMENTATION = Implementation(
    name="numba_shared",
    rank=30,  # impl="auto" preference (the layer benchmarks' ranking)
    fn=shift_add,
    computes=Computes.SHIFT_ADD,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    description="Numba CUDA: rows/column tiles staged in shared memory, moves gathered there, outputs written once",
    execution=_execution,
    traffic=traffic,
    kernel_figures=kernel_figures,
)
