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

import numpy as np
import torch

from harness import Branches, Computes, Execution, Implementation, ShiftwiseSpec, compulsory_bytes, cudac, move_tables

KERNEL_SOURCE = Path(__file__).with_suffix(".cu")
BLOCK = 128
#: Dynamic shared memory per block without opting in to more (sm_80, sm_90).
SHARED_LIMIT = cudac.SHARED_LIMIT


def rows_shared_bytes(spec: ShiftwiseSpec, width: int, staged: int, moves: int, itemsize: int) -> int:
    """Shared memory of the rows kernel: k input rows with their halo, the ``staged`` kernels'
    rows over the padded width, and the int32 move table."""
    k, e = spec.small_kernel, spec.extra_pad
    return itemsize * (k * (width + 2 * (k - 1)) + staged * (width + 2 * e)) + 4 * (2 * moves + staged)


def columns_shared_bytes(spec: ShiftwiseSpec, height: int, staged: int, moves: int, tile: int, itemsize: int) -> int:
    """Shared memory of the columns kernel for a ``tile`` of columns: the input tile with its
    halo, the ``staged`` kernels' columns over the padded height, and the int32 move table
    (``launch_plan`` takes the widest tile for which this fits)."""
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
    rows_bytes = rows_shared_bytes(spec, width, tables.rows.shape[1], tables.row_moves.shape[1], itemsize)
    if rows_bytes > SHARED_LIMIT:
        raise ValueError(f"cupy_fused: a {width}-wide row needs {rows_bytes} bytes of shared memory, over {SHARED_LIMIT}")
    def columns_bytes_of(tile: int) -> int:
        return columns_shared_bytes(spec, height, tables.columns.shape[1], tables.column_moves.shape[1], tile, itemsize)

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


def launch_bytes(spec: ShiftwiseSpec, shape, itemsize: int) -> dict[str, tuple[int, tuple]]:
    """(DRAM bytes with a cold L2, re-reads as (bytes, working set)) of each kernel, summing to
    ``traffic``: the rows kernel reads x with its row halo (the halo re-read from the L2 just
    after a neighbouring block read it) and writes Oh and Oi; the columns kernel reads x again
    (after the rows kernel moved x and two outputs) with its column halo, and writes Ov."""
    batch, channels, height, width = shape
    k, r = spec.small_kernel, spec.small_kernel // 2
    tile = launch_plan(spec, shape, itemsize)["tile"]
    x = itemsize * batch * channels * height * width
    planes = batch * channels
    rows_halo = itemsize * planes * (sum(_overlap(i - r, k, height) for i in range(height)) * width - height * width)
    columns_halo = itemsize * planes * (height * sum(_overlap(x0 - r, tile + k - 1, width) for x0 in range(0, width, tile)) - height * width)
    small = compulsory_bytes(spec, shape, itemsize) - 4 * x  # weights and tables, once
    return {
        "sw_fused_rows_f32": (x + rows_halo + 2 * x + small, ((rows_halo, 0),)),
        "sw_fused_columns_f32": (x + columns_halo + x, ((x, 3 * x), (columns_halo, 0))),
    }


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


def shared_sites(spec: ShiftwiseSpec, shape) -> dict[str, list]:
    """Every shared-memory access of both kernels of ``cupy_fused.cu`` over one launch, by
    kernel, their index expressions replayed for the 32 lanes of each warp
    (``harness.cudac.banks``); lanes of a warp in lockstep, a lane whose guard fails inactive.
    Channels with the same staged count (conv) or the same (staged row, shift) move (gather)
    replay alike, so each is replayed once and weighted."""
    from collections import Counter

    banks = cudac.banks

    batch, channels, height, width = shape
    k, e, p = spec.small_kernel, spec.extra_pad, spec.small_kernel - 1
    wy, wx, hy, hx = width + 2 * e, width + 2 * p, height + 2 * e, height + 2 * p
    plan, tables = launch_plan(spec, shape, 4), move_tables(spec, height, width)

    def at(words, active):
        return np.where(active, 4 * words, -1).reshape(-1, 32)

    def staging(tid, valid, threads, parts, blocks):
        out = []
        for name, start, total in parts:
            t, active = banks.strided(tid, valid, total, threads)
            out.append(banks.site(name, "st", at(start + t, active), blocks))
        return out

    def counts(staged_table, move_table):
        staged = Counter(int((staged_table[c] >= 0).sum()) for c in range(channels))
        moves = Counter((int(m), int(s)) for c in range(channels) for m, s in move_table[c] if m >= 0)
        return staged, moves

    # rows kernel: a block per (b, c, i); layout [k x wx xs][R x wy ys][2M moves][R rows]
    (_,), (threads,), _ = plan["rows"]
    tid, valid = banks.warps_of(threads)
    staged_max, moves_max = tables.rows.shape[1], tables.row_moves.shape[1]
    ys0 = k * wx
    moves0 = ys0 + staged_max * wy
    rows0 = moves0 + 2 * moves_max
    blocks = batch * height  # per channel
    rows = staging(tid, valid, threads, [("stage moves", moves0, 2 * moves_max), ("stage rows", rows0, staged_max),
                                         ("stage x", 0, k * wx)], batch * channels * height)  # fmt: skip
    per_staged, per_move = counts(tables.rows, tables.row_moves)
    for staged, times in per_staged.items():
        rows.append(banks.site("count staged", "ld", at(rows0 + 0 * tid, valid), blocks * times * min(staged + 1, staged_max)))
        t, active = banks.strided(tid, valid, staged * wy, threads)
        r, q = t // wy, t % wy
        rows.append(banks.site("conv: kernel", "ld", at(rows0 + r, active), blocks * times))
        for u in range(k):
            for v in range(k):
                rows.append(banks.site("conv: x", "ld", at(u * wx + q + v, active), blocks * times))
        rows.append(banks.site("conv: y", "st", at(ys0 + t, active), blocks * times))
    col, active = banks.strided(tid, valid, width, threads)
    rows.append(banks.site("gather: moves", "ld", at(moves0 + 0 * tid, active), blocks * 2 * sum(per_move.values())))
    for (m, shift), times in per_move.items():
        q = col - shift
        rows.append(banks.site("gather: y", "ld", at(ys0 + m * wy + q, active & (q >= 0) & (q < wy)), blocks * times))
    picks = int((tables.identity >= 0).sum())
    for u in range(k):
        for v in range(k):
            rows.append(banks.site("identity: x", "ld", at(u * wx + col + e + v, active), blocks * picks))

    # columns kernel: a block per (b, c, tile); layout [hx x tx xs][R x hy x tile ys][2M moves][R columns]
    tile = plan["tile"]
    (_,), (threads,), _ = plan["columns"]
    tid, valid = banks.warps_of(threads)
    tx = tile + k - 1
    staged_max, moves_max = tables.columns.shape[1], tables.column_moves.shape[1]
    ys0 = hx * tx
    moves0 = ys0 + staged_max * hy * tile
    columns0 = moves0 + 2 * moves_max
    spans = [min(tile, width - x0) for x0 in range(0, width, tile)]
    columns = staging(tid, valid, threads, [("stage moves", moves0, 2 * moves_max), ("stage columns", columns0, staged_max),
                                            ("stage x", 0, hx * tx)], batch * channels * len(spans))  # fmt: skip
    per_staged, per_move = counts(tables.columns, tables.column_moves)
    for span in sorted(set(spans)):
        blocks = batch * spans.count(span)  # per channel
        for staged, times in per_staged.items():
            columns.append(banks.site("count staged", "ld", at(columns0 + 0 * tid, valid), blocks * times * min(staged + 1, staged_max)))
            flat, active = banks.strided(tid, valid, staged * hy * span, threads)
            r, a, t = flat // (hy * span), flat // span % hy, flat % span
            columns.append(banks.site("conv: kernel", "ld", at(columns0 + r, active), blocks * times))
            for u in range(k):
                for v in range(k):
                    columns.append(banks.site("conv: x", "ld", at((a + u) * tx + t + v, active), blocks * times))
            columns.append(banks.site("conv: y", "st", at(ys0 + (r * hy + a) * tile + t, active), blocks * times))
        flat, active = banks.strided(tid, valid, height * span, threads)
        i, t = flat // span, flat % span
        columns.append(banks.site("gather: moves", "ld", at(moves0 + 0 * tid, active), blocks * 2 * sum(per_move.values())))
        for (m, shift), times in per_move.items():
            a = i - shift
            columns.append(banks.site("gather: y", "ld", at(ys0 + (m * hy + a) * tile + t, active & (a >= 0) & (a < hy)), blocks * times))
    return {"sw_fused_rows_f32": banks.merge(rows), "sw_fused_columns_f32": banks.merge(columns)}


def kernel_figures(arch: str) -> list:
    """ptxas and SASS figures of every kernel, with the float32 kernels' launches on each
    SW-tiny stage."""

    launches: dict[str, list] = {}
    for case, spec, shape in cudac.report_stages():
        plan, work, sites = launch_plan(spec, shape, 4), executed_work(spec, shape), shared_sites(spec, shape)
        bytes_ = launch_bytes(spec, shape, 4)
        for kernel, key in (("sw_fused_rows_f32", "rows"), ("sw_fused_columns_f32", "columns")):
            (grid,), block, shared = plan[key]
            dram, reuse = bytes_[kernel]
            launches.setdefault(kernel, []).append(cudac.Launch(case, grid, block, shared, *work[kernel], shared_sites=tuple(sites[kernel]),
                                                                barriers_per_block=2, dram_bytes=dram, reuse=reuse))  # fmt: skip
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
