"""The whole SW operator fused in one pass per strip branch (``cupy_fused.cu``), run by CuPy.

The kernels compute the small convolution inside shared memory and gather the shift-and-add
from there, so the conv output (nk times the input) never reaches global memory; pruned
kernels and wholly off-map slots are skipped through the move tables (``harness.moves``).
Only this wrapper uses CuPy: on a GPU it compiles the plain CUDA C source with
``cupy.RawModule`` and launches on torch's current stream with DLPack views (no copies);
without one, the same source runs as a host build (``harness.cudac``), which is how CI checks it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from harness import Branches, Computes, Execution, Implementation, ShiftwiseSpec, compulsory_bytes, cudac, move_tables

KERNEL_SOURCE = Path(__file__).with_suffix(".cu")
BLOCK = 128
#: Dynamic shared memory per block without opting in to more (sm_80, sm_90).
SHARED_LIMIT = cudac.SHARED_LIMIT


def _rows_shared_bytes(spec: ShiftwiseSpec, width: int, staged: int, moves: int, itemsize: int) -> int:
    k, e = spec.small_kernel, spec.extra_pad
    return itemsize * (k * (width + 2 * (k - 1)) + staged * (width + 2 * e)) + 4 * (2 * moves + staged)


def _columns_shared_bytes(spec: ShiftwiseSpec, height: int, staged: int, moves: int, tile: int, itemsize: int) -> int:
    k, e = spec.small_kernel, spec.extra_pad
    return itemsize * ((height + 2 * (k - 1)) * (tile + k - 1) + staged * (height + 2 * e) * tile) + 4 * (
        2 * moves + staged
    )


@functools.lru_cache(maxsize=256)
def launch_plan(spec: ShiftwiseSpec, shape, itemsize: int) -> dict:
    """Grids, blocks, column tile and shared memory of both kernels, or a ValueError when a
    row of the map does not fit in shared memory. Made once per configuration (read-only)."""
    batch, channels, height, width = shape
    tables = move_tables(spec, height, width)
    rows_bytes = _rows_shared_bytes(spec, width, tables.rows.shape[1], tables.row_moves.shape[1], itemsize)
    if rows_bytes > SHARED_LIMIT:
        raise ValueError(f"cupy_fused: a {width}-wide row needs {rows_bytes} bytes of shared memory, over {SHARED_LIMIT}")
    def columns_bytes_of(tile: int) -> int:
        return _columns_shared_bytes(spec, height, tables.columns.shape[1], tables.column_moves.shape[1], tile, itemsize)

    tile = cudac.widest_tile(columns_bytes_of)
    if tile is None:
        raise ValueError(f"cupy_fused: a {height}-high column needs {columns_bytes_of(1)} bytes of shared memory, over {SHARED_LIMIT}")
    columns_bytes = columns_bytes_of(tile)
    return {
        "rows": ((batch * channels * height,), (min(BLOCK, 32 * -(-width // 32)),), rows_bytes),
        "columns": ((batch * channels * -(-width // tile),), (BLOCK,), columns_bytes),
        "tile": tile,
    }


def forward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    x, weight = x.contiguous(), weight.contiguous()
    batch, channels, height, width = x.shape
    plan = launch_plan(spec, tuple(x.shape), x.element_size())
    tables = cudac.device_move_tables(spec, height, width, x.device)
    rows, row_moves, identity, columns, column_moves = (
        tables[name] for name in ("rows", "row_moves", "identity", "columns", "column_moves")
    )
    out_h, out_v, out_i = (torch.empty_like(x) for _ in range(3))
    launch = cudac.cupy_launcher(KERNEL_SOURCE, x.device)
    suffix = cudac.dtype_suffix(x.dtype)
    sizes = (channels, height, width, spec.nk, spec.small_kernel)
    grid, block, shared = plan["rows"]
    launch(
        f"sw_fused_rows_{suffix}", grid, block, x, weight, out_h, out_i, rows, row_moves, identity,
        rows.shape[1], row_moves.shape[1], *sizes, spec.groups, shared_bytes=shared,
    )  # fmt: skip
    grid, block, shared = plan["columns"]
    launch(
        f"sw_fused_columns_{suffix}", grid, block, x, weight, out_v, columns, column_moves,
        columns.shape[1], column_moves.shape[1], *sizes, plan["tile"], shared_bytes=shared,
    )  # fmt: skip
    return Branches(out_h, out_v, out_i)


def _overlap(start: int, length: int, limit: int) -> int:
    """How many of start .. start+length-1 lie in 0 .. limit-1."""
    return max(0, min(start + length, limit) - max(start, 0))


def traffic(spec: ShiftwiseSpec, shape, itemsize: int) -> int:
    """Compulsory bytes plus the halo reads of the tiles: each output row reads its k input
    rows, each column tile its columns plus k - 1 (zero padding is not read), so the input is
    read about twice, not once. The weights and tables, re-read by every block but a few KiB
    per channel that stay in cache, are counted once, as in the compulsory bytes."""
    batch, channels, height, width = shape
    k, r = spec.small_kernel, spec.small_kernel // 2
    tile = launch_plan(spec, shape, itemsize)["tile"]
    per_plane = (
        sum(_overlap(i - r, k, height) for i in range(height)) * width  # rows kernel
        + height * sum(_overlap(x0 - r, tile + k - 1, width) for x0 in range(0, width, tile))  # columns kernel
    )
    halo = batch * channels * (per_plane - height * width)  # reads beyond the compulsory one
    return compulsory_bytes(spec, shape, itemsize) + itemsize * halo


def _execution(device: torch.device) -> Execution:
    return cudac.cupy_execution(KERNEL_SOURCE, device)


def executed_work(spec: ShiftwiseSpec, shape) -> dict[str, tuple[int, int]]:
    """(multiply-adds, additions) of each kernel: the rows kernel computes each staged y row
    once per output row and the identity conv per output, the columns kernel each staged y
    column over the full height; every in-map move is one addition."""
    batch, channels, height, width = shape
    k, e = spec.small_kernel, spec.extra_pad
    tables = move_tables(spec, height, width)
    identity = int((tables.identity >= 0).sum())
    horizontal, vertical, identity_moves = cudac.branch_moves(spec, height, width)
    rows_fma = batch * height * k * k * (tables.staged_rows * (width + 2 * e) + identity * width)
    rows_adds = batch * (horizontal + identity_moves)
    columns_fma = batch * k * k * tables.staged_columns * (height + 2 * e) * width
    columns_adds = batch * vertical
    return {"sw_fused_rows_f32": (rows_fma, rows_adds), "sw_fused_columns_f32": (columns_fma, columns_adds)}


def kernel_figures(arch: str) -> list:
    """ptxas and SASS figures of every kernel, with the float32 kernels' launches on each
    SW-tiny stage."""

    launches: dict[str, list] = {}
    for case, spec, shape in cudac.report_stages():
        plan, work = launch_plan(spec, shape, 4), executed_work(spec, shape)
        for kernel, key in (("sw_fused_rows_f32", "rows"), ("sw_fused_columns_f32", "columns")):
            (grid,), block, shared = plan[key]
            launches.setdefault(kernel, []).append(cudac.Launch(case, grid, block, shared, *work[kernel]))
    return cudac.figures_of(cudac.compile_cuda(cudac.CudaSource.read(KERNEL_SOURCE), arch), launches)


IMPLEMENTATION = Implementation(
    name="cupy_fused",
    rank=40,  # impl="auto" preference (the layer benchmarks' ranking)
    fn=forward,
    computes=Computes.OPERATOR,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    description="small conv fused with the shift-and-add in shared memory: the conv output never reaches memory",
    execution=_execution,
    traffic=traffic,
    kernel_figures=kernel_figures,
)
