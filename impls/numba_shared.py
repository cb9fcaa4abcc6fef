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
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from harness import Branches, Computes, Execution, Implementation, ShiftwiseSpec, compulsory_bytes, conv_output_elements, move_tables

SIMULATOR_ENV = "NUMBA_ENABLE_CUDASIM"
cuda = None  # numba.cuda, bound by _kernels() on first use
#: Threads per block; rows and column tiles loop when they are longer.
BLOCK = 128
#: Shared memory one block may use (the default per-block limit on sm_80 and sm_90).
SHARED_LIMIT = 48 * 1024


def _simulated() -> bool:
    return os.environ.get(SIMULATOR_ENV) == "1"


@functools.lru_cache(maxsize=None)
def _kernels(dtype_name: str):
    """Compile-on-first-use kernels for one dtype (numba is imported only here)."""
    # The kernels must see `cuda` as a module global: Numba's simulator runs them with that
    # global swapped for its fake module. Bound on first use, so importing this file (as
    # discovery does) neither imports numba nor fixes simulator-or-not for the process.
    global cuda
    from numba import cuda, float32, float64

    scalar = {"float32": float32, "float64": float64}[dtype_name]

    @cuda.jit
    def rows_kernel(y, out_h, out_i, rows, moves, identity, extra_pad):
        # y: (B, C*nk, Hy, Wy); rows: (C, R) kernels to stage, -1 padded;
        # moves: (C, Mh, 2) (shared row, shift), -1 padded; identity: (C, E) flat kernel or -1.
        batch, channels, height, width = out_h.shape
        nk = y.shape[1] // channels
        wy = y.shape[3]
        block = cuda.blockIdx.x
        i = block % height
        c = (block // height) % channels
        b = block // (height * channels)
        staged = cuda.shared.array(0, dtype=scalar)
        for r in range(rows.shape[1]):
            j = rows[c, r]
            if j < 0:
                break
            for q in range(cuda.threadIdx.x, wy, cuda.blockDim.x):
                staged[r * wy + q] = y[b, c * nk + j, i + extra_pad, q]
        cuda.syncthreads()
        for x in range(cuda.threadIdx.x, width, cuda.blockDim.x):
            acc = scalar(0)
            for m in range(moves.shape[1]):
                r = moves[c, m, 0]
                if r < 0:
                    break
                q = x - moves[c, m, 1]
                if q >= 0 and q < wy:
                    acc += staged[r * wy + q]
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
        hy = y.shape[2]
        tiles = (width + tile - 1) // tile
        block = cuda.blockIdx.x
        x0 = (block % tiles) * tile
        c = (block // tiles) % channels
        b = block // (tiles * channels)
        staged = cuda.shared.array(0, dtype=scalar)
        span = min(tile, width - x0)
        for r in range(columns.shape[1]):
            j = columns[c, r]
            if j < 0:
                break
            for flat in range(cuda.threadIdx.x, hy * span, cuda.blockDim.x):
                a = flat // span
                t = flat % span
                staged[(r * hy + a) * tile + t] = y[b, c * nk + j, a, x0 + t + extra_pad]
        cuda.syncthreads()
        for flat in range(cuda.threadIdx.x, height * span, cuda.blockDim.x):
            i = flat // span
            t = flat % span
            acc = scalar(0)
            for m in range(moves.shape[1]):
                r = moves[c, m, 0]
                if r < 0:
                    break
                a = i - moves[c, m, 1]
                if a >= 0 and a < hy:
                    acc += staged[(r * hy + a) * tile + t]
            out_v[b, c, i, x0 + t] = acc

    return rows_kernel, columns_kernel


@functools.lru_cache(maxsize=64)
def _device_tables(spec: ShiftwiseSpec, height: int, width: int, device: torch.device):
    """The move tables as tensors on ``device``, made once per (spec, map size, device)."""
    tables = move_tables(spec, height, width)
    arrays = (tables.rows, tables.row_moves, tables.columns, tables.column_moves, tables.identity)
    return tuple(torch.tensor(a, device=device).contiguous() for a in arrays)


def _column_tile(staged_kernels: int, hy: int, itemsize: int) -> int:
    """Widest tile (<= 32 columns, a power of two) whose staged columns fit in shared memory."""
    for tile in (32, 16, 8, 4, 2, 1):
        if max(1, staged_kernels) * hy * tile * itemsize <= SHARED_LIMIT:
            return tile
    raise ValueError(
        f"numba_shared: {staged_kernels} staged columns of height {hy} exceed {SHARED_LIMIT} bytes of shared memory"
    )


def shift_add(y: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    from numba import cuda

    y = y.contiguous()
    e = spec.extra_pad
    batch, _, hy, wy = y.shape
    height, width = hy - 2 * e, wy - 2 * e
    tables = move_tables(spec, height, width)
    itemsize = y.element_size()
    if tables.rows.shape[1] * wy * itemsize > SHARED_LIMIT:
        raise ValueError(
            f"numba_shared: {tables.rows.shape[1]} staged rows of width {wy} exceed {SHARED_LIMIT} bytes of shared memory"
        )
    tile = _column_tile(tables.columns.shape[1], hy, itemsize)
    out_h, out_v, out_i = (y.new_empty(batch, spec.channels, height, width) for _ in range(3))

    if _simulated():  # the simulator works on host arrays: zero-copy numpy views of CPU tensors
        view = lambda t: t.detach().numpy()  # noqa: E731
        stream = 0
    else:
        view = cuda.as_cuda_array
        stream = cuda.external_stream(torch.cuda.current_stream(y.device).cuda_stream)
    rows, row_moves, columns, column_moves, identity = _device_tables(spec, height, width, y.device)

    rows_kernel, columns_kernel = _kernels(str(y.dtype).removeprefix("torch."))
    threads = min(BLOCK, 32 * -(-width // 32))
    rows_kernel[batch * spec.channels * height, threads, stream, rows.shape[1] * wy * itemsize](
        view(y), view(out_h), view(out_i), view(rows), view(row_moves), view(identity), e
    )
    tiles = -(-width // tile)
    threads = min(BLOCK, 32 * -(-(height * tile) // 32))
    columns_kernel[batch * spec.channels * tiles, threads, stream, columns.shape[1] * hy * tile * itemsize](
        view(y), view(out_v), view(columns), view(column_moves), e, tile
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
    return Execution(mode, None, emulated)


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


def kernel_figures(arch: str):
    """ptxas figures of both kernels (float32): PTX from ``numba.cuda.compile_ptx`` (NVVM from
    the nvidia-nvvm wheel), assembled by ptxas from the nvidia-cuda-nvcc wheel."""
    if _simulated():
        raise RuntimeError("kernel figures need real Numba CUDA compilation, not the simulator")
    from cuda.pathfinder import find_nvidia_binary_utility
    from numba import cuda

    from harness.cudac import parse_ptxas_log

    ptxas = find_nvidia_binary_utility("ptxas")
    if ptxas is None:
        raise RuntimeError("ptxas not found; install the nvidia-cuda-nvcc wheel")
    cc = (int(arch[3:-1]), int(arch[-1]))
    rows_kernel, columns_kernel = _kernels("float32")
    index = "int32[:, ::1]"
    signatures = {
        "rows_kernel": f"(float32[:, :, :, ::1], float32[:, :, :, ::1], float32[:, :, :, ::1], {index}, int32[:, :, ::1], {index}, int64)",
        "columns_kernel": f"(float32[:, :, :, ::1], float32[:, :, :, ::1], {index}, int32[:, :, ::1], int64, int64)",
    }
    figures = []
    for name, kernel in (("rows_kernel", rows_kernel), ("columns_kernel", columns_kernel)):
        ptx, _ = cuda.compile_ptx(kernel.py_func, signatures[name], cc=cc)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / f"{name}.ptx"
            path.write_text(ptx)
            done = subprocess.run(
                [ptxas, f"-arch={arch}", "-v", str(path), "-o", str(Path(scratch) / "out.cubin")],
                capture_output=True, text=True,
            )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"ptxas failed on {name} for {arch}:\n{done.stderr}")
        (entry,) = parse_ptxas_log(done.stdout + done.stderr, arch).values()
        figures.append(entry.__class__(**{**vars(entry), "kernel": name}))
    return figures


IMPLEMENTATION = Implementation(
    name="numba_shared",
    fn=shift_add,
    computes=Computes.SHIFT_ADD,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    description="Numba CUDA: rows/column tiles staged in shared memory, moves gathered there, outputs written once",
    execution=_execution,
    traffic=traffic,
    kernel_figures=kernel_figures,
)
