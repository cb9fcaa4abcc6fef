"""The planes form: the SW operator in gather form, one (b, c) plane per task (``parallel=True``).

Work is split into B*C tasks, one per (b, c) plane, run with ``prange``; each thread owns a
scratch area (reused across calls) that stays in its core's caches:

1. the input plane x[b, c], copied into a zero-padded plane (padding p = k - 1);
2. stage 1, only for the small kernels this channel needs (active, and used by an in-map slot
   or by the identity branch): the y_j planes, (H+2e) x (W+2e) each, with a zero margin left
   and right of every row and a zero row between planes. For the target layer (nk=17, 56x56)
   that is ~450 KB per thread: it lives in the core's L2 and is never written to memory;
3. stage 2, gather: every output row sums its moves (kernel plane, shift) and is stored once.
   - horizontal: output (i, x) reads y_j[i+e, x - s]. With the zero margins each move is a
     plain window of the row (partly off-map moves read zeros): no clipping, no branches;
   - vertical: output (i, x) reads y_j[i - s, x + e]. Moves are sorted by shift, so the moves
     whose source row is on the map form one contiguous range per output row; the zero rows
     between planes absorb the one-row overshoot of doing two output rows per call;
   - identity: the horizontal gather with shift -e, one move per active group pick.
   The move lists come from ``harness.move_tables`` (cached per (spec, H, W)), which owns
   the in-map predicate: pruned kernels and slots whose shift puts them wholly off the map are
   left out, so they cost nothing. This module only regroups them (one staged list per
   channel, vertical moves sorted by shift, column offsets into its margins).

Both stages run through one primitive, a "row kernel" written as LLVM IR (a Numba intrinsic):
it sums shifted rows, ``count`` terms, each term optionally scaled by a broadcast weight,
into accumulators held in SIMD registers (64-byte vectors: 16 float32 / 8 float64 lanes) for
the whole loop, then stores them once. Stage 1 is that kernel with the k*k taps as terms and
two kernels x two rows per call (16 accumulators, 2 FMAs per load, any k); stage 2 is the same
with the moves as terms (one load and one add per term). Plain Numba loops over a 56-wide row
vectorise poorly (short trip counts, runtime alias checks, scalar epilogues, accumulators
spilled to memory); the intrinsic gets 2-3x more out of the same memory layout.

Pruned kernels are never staged and never read, so NaN weights cannot reach a sum. No
atomics: each output element is summed by one thread. Floating point: only reassociation and
FMA contraction (one rounding per multiply-add) are allowed, which the reference's
order-independent gamma_n bound covers; NaN and inf semantics are kept.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import torch

from harness import Branches, ShiftwiseSpec, move_tables

from .vectors import VECTOR_BYTES, vector_fma

_FASTMATH = {"reassoc", "contract"}
# VECTOR_BYTES: one AVX-512 register (this host has AVX-512F; on a machine without it LLVM
# splits each vector into two AVX registers: correct, but the 16 accumulators of the stage-1
# kernel then spill).
#: Widest row kernel, in vectors; wider rows are done in column blocks.
MAX_VECTORS = 4


# --------------------------------------------------------------------------- host tables
@dataclass(frozen=True)
class _Tables:
    """Per-channel staging and move tables for one (spec, H, W), int32.

    ``staged[c, r]`` is the kernel j held in buffer plane r (``n_staged[c]`` of them). Moves
    are (plane, a) pairs: for the horizontal and identity branches ``a`` is the y column that
    output column 0 reads, ``left - s``; for the vertical branch ``a`` is the shift s, and
    those moves are sorted by increasing shift. ``left`` is the zero margin before y's
    columns and ``reach`` the largest column a gather starts at.
    """

    staged: np.ndarray
    n_staged: np.ndarray
    h_moves: np.ndarray
    n_h: np.ndarray
    v_moves: np.ndarray
    n_v: np.ndarray
    i_moves: np.ndarray
    n_i: np.ndarray
    left: int
    reach: int

    def arrays(self) -> tuple:
        return (self.staged, self.n_staged, self.h_moves, self.n_h, self.v_moves, self.n_v, self.i_moves, self.n_i)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())


@functools.lru_cache(maxsize=64)
def _tables(spec: ShiftwiseSpec, height: int, width: int) -> _Tables:
    """This design's tables for an H x W map, from ``harness.move_tables`` (which owns the
    in-map predicate and the pruning): one staged list per channel (the union of the kernels
    the three branches read), the vertical moves sorted by shift (cached: specs are hashable)."""
    e, nk, channels = spec.extra_pad, spec.nk, spec.channels
    moves = move_tables(spec, height, width)

    def listed(staged: np.ndarray, table: np.ndarray, c: int) -> list[tuple[int, int]]:
        return [(int(staged[c, r]), int(s)) for r, s in table[c] if r >= 0]

    h_lists = [listed(moves.rows, moves.row_moves, c) for c in range(channels)]
    v_lists = [sorted(listed(moves.columns, moves.column_moves, c), key=lambda m: m[1]) for c in range(channels)]
    i_lists = [[(int(flat) - c * nk, -e) for flat in moves.identity[c] if flat >= 0] for c in range(channels)]
    staged_lists = [sorted({j for j, _ in h + v + i}) for h, v, i in zip(h_lists, v_lists, i_lists)]

    # Zero margin left of y's columns: output column 0 of a move with shift s reads column -s.
    left = max([0] + [s for moves_ in h_lists for _, s in moves_])
    reach = max([left - s for moves_ in h_lists + i_lists for _, s in moves_] + [left + e])

    def table(lists, value_of):
        out = np.zeros((channels, max(1, max(map(len, lists))), 2), dtype=np.int32)
        counts = np.zeros(channels, dtype=np.int32)
        for c, lst in enumerate(lists):
            plane = {j: r for r, j in enumerate(staged_lists[c])}
            for m, (j, s) in enumerate(lst):
                out[c, m] = (plane[j], value_of(s))
            counts[c] = len(lst)
        return out, counts

    staged = np.zeros((channels, max(1, max(map(len, staged_lists)))), dtype=np.int32)
    for c, lst in enumerate(staged_lists):
        staged[c, : len(lst)] = lst
    n_staged = np.array([len(lst) for lst in staged_lists], dtype=np.int32)
    h_moves, n_h = table(h_lists, lambda s: left - s)
    v_moves, n_v = table(v_lists, lambda s: s)
    i_moves, n_i = table(i_lists, lambda s: left - s)
    return _Tables(staged, n_staged, h_moves, n_h, v_moves, n_v, i_moves, n_i, left, reach)


@dataclass(frozen=True)
class _Layout:
    """Sizes of one thread's scratch area (elements): padded x plane, y planes, output rows.
    Two calls with equal layouts write exactly the same places (so the zeros stay zeros)."""

    height: int
    width: int
    small_kernel: int
    left: int
    lanes: int
    conv_vectors: int  # vectors per y row computed by stage 1 (exact zeros past W + 2e)
    out_vectors: int  # vectors per gathered output row
    x_stride: int
    x_size: int
    y_stride: int
    plane: int  # y plane stride: H + 2e rows and one zero row
    y_size: int
    acc_size: int


def _layout(spec: ShiftwiseSpec, tables: _Tables, height: int, width: int, itemsize: int) -> _Layout:
    k, p, e = spec.small_kernel, spec.padding, spec.extra_pad
    hy, wy = height + 2 * e, width + 2 * e
    lanes = VECTOR_BYTES // itemsize
    conv_vectors, out_vectors = -(-wy // lanes), -(-width // lanes)
    # x rows are read in whole vectors, k - 1 columns beyond the last y column.
    x_stride = max(width + 2 * p, conv_vectors * lanes + k - 1)
    y_stride = max(tables.left + conv_vectors * lanes, tables.reach + out_vectors * lanes)
    plane = (hy + 1) * y_stride
    # A zero row, then each plane followed by a zero row (the next plane's row -1).
    y_size = (1 + tables.staged.shape[1] * (hy + 1)) * y_stride
    return _Layout(
        height, width, k, tables.left, lanes, conv_vectors, out_vectors, x_stride, (height + 2 * p) * x_stride,
        y_stride, plane, y_size, height * out_vectors * lanes,
    )  # fmt: skip


_scratch = threading.local()


def _scratch_buffers(layout: _Layout, dtype: np.dtype, threads: int):
    """Per-thread scratch, zeroed once and reused by later calls with the same layout: the
    kernels never write the zero margins and zero rows, so they stay zero. One set per Python
    thread (and a few layouts), so concurrent callers never share one."""
    cache = getattr(_scratch, "buffers", None)
    if cache is None:
        cache = _scratch.buffers = {}
    key = (layout, np.dtype(dtype).str, threads)
    if key not in cache:
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[key] = (
            np.zeros((threads, layout.x_size), dtype=dtype),
            np.zeros((threads, layout.y_size), dtype=dtype),
            np.zeros((threads, layout.acc_size), dtype=dtype),
        )
    return cache[key]


# --------------------------------------------------------------------------- row kernel
def _row_kernel(vectors: int, kernels: int, rows: int, ranged: bool):
    """A Numba intrinsic that sums shifted rows in SIMD registers.

    ``row_kernel(data, offsets, ranges, count, base, row_step, coef, out, out_start, out_stride,
    out_row_step, blocks, block_step, out_block_step, groups, coef_group_step, out_group_step,
    offsets_start, ranges_start, coef_start)`` (the arrays are flat; the ``*_start`` arguments
    are where each one's part begins: no array views, whose reference counts two threads
    would fight over) computes, for each group g < groups, block bb < blocks, row rr < ``rows``, weight set
    jj < ``kernels`` (one unweighted set if ``kernels`` is 0) and vector cc < ``vectors``
    (``lanes`` = 64 bytes / itemsize elements each):

        start = base + bb*block_step + rr*row_step + cc*lanes
        acc   = sum over m < n of [coef[g*coef_group_step + jj*count + m] *]
                    data[start + offsets[first + m] : ... + lanes]
        out[out_start + g*out_group_step + bb*out_block_step + jj*out_stride + rr*out_row_step
            + cc*lanes : ... + lanes] = acc

    with (first, n) = (0, count), or (ranges[2*bb], ranges[2*bb + 1]) if ``ranged``. The
    accumulators stay in registers for the whole loop over m: one unaligned vector load per
    row and vector, then one add or FMA per weight set, and one store per accumulator at the
    end. No bounds checks: the caller sizes its buffers so every access is inside them. Adds
    carry only the ``reassoc``/``contract`` flags; weighted terms use llvm.fma (one rounding).
    """
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    i64 = ir.IntType(64)
    sets = max(kernels, 1)

    def const(value: int):
        return ir.Constant(i64, value)

    @intrinsic
    def row_kernel(typingctx, data, offsets, ranges, count, base, row_step, coef, out, out_start, out_stride,
                   out_row_step, blocks, block_step, out_block_step, groups, coef_group_step, out_group_step,
                   offsets_start, ranges_start, coef_start):  # fmt: skip
        signature = types.void(data, offsets, ranges, count, base, row_step, coef, out, out_start, out_stride,
                               out_row_step, blocks, block_step, out_block_step, groups, coef_group_step,
                               out_group_step, offsets_start, ranges_start, coef_start)  # fmt: skip

        def codegen(context, builder, sig, values):
            values = [
                context.cast(builder, value, kind, types.int64) if isinstance(kind, types.Integer) else value
                for value, kind in zip(values, sig.args)
            ]
            (data_v, offsets_v, ranges_v, count, base, row_step, coef_v, out_v, out_start, out_stride,
             out_row_step, blocks, block_step, out_block_step, groups, coef_group_step, out_group_step,
             offsets_start, ranges_start, coef_start) = values  # fmt: skip
            data = context.make_array(sig.args[0])(context, builder, data_v).data
            offsets = context.make_array(sig.args[1])(context, builder, offsets_v).data
            offsets = builder.gep(offsets, [offsets_start])
            ranges = context.make_array(sig.args[2])(context, builder, ranges_v).data
            ranges = builder.gep(ranges, [ranges_start])
            coef = context.make_array(sig.args[6])(context, builder, coef_v).data
            coef = builder.gep(coef, [coef_start])
            out = context.make_array(sig.args[7])(context, builder, out_v).data
            vector, itemsize, lanes, fma = vector_fma(context, builder, sig.args[0].dtype)
            vector_ptr = vector.as_pointer()
            undefined = ir.Constant(vector, ir.Undefined)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), None)
            # Stack slots in the entry block: LLVM promotes them to registers.
            slots = {key: cgutils.alloca_once(builder, vector) for key in np.ndindex(sets, rows, vectors)}
            with cgutils.for_range(builder, groups) as group_loop:
                group = group_loop.index
                group_coef = builder.gep(coef, [builder.mul(group, coef_group_step)])
                group_out = builder.add(out_start, builder.mul(group, out_group_step))
                with cgutils.for_range(builder, blocks) as block_loop:
                    block = block_loop.index
                    block_base = builder.add(base, builder.mul(block, block_step))
                    if ranged:
                        pair = builder.mul(block, const(2))
                        first = builder.sext(builder.load(builder.gep(ranges, [pair])), i64)
                        terms = builder.sext(builder.load(builder.gep(ranges, [builder.add(pair, const(1))])), i64)
                        block_offsets = builder.gep(offsets, [first])
                    else:
                        terms, block_offsets = count, offsets
                    for slot in slots.values():
                        builder.store(ir.Constant(vector, None), slot)
                    with cgutils.for_range(builder, terms) as loop:
                        m = loop.index
                        weights = []
                        for jj in range(kernels):
                            index = builder.add(builder.mul(const(jj), count), m)
                            weight = builder.load(builder.gep(group_coef, [index]))
                            weight = builder.insert_element(undefined, weight, ir.Constant(ir.IntType(32), 0))
                            weights.append(builder.shuffle_vector(weight, undefined, splat))
                        offset = builder.sext(builder.load(builder.gep(block_offsets, [m])), i64)
                        row_start = builder.add(block_base, offset)
                        for rr in range(rows):
                            start = builder.add(row_start, builder.mul(const(rr), row_step))
                            for cc in range(vectors):
                                address = builder.gep(data, [builder.add(start, const(cc * lanes))])
                                term = builder.load(builder.bitcast(address, vector_ptr), align=itemsize)
                                for jj in range(sets):
                                    slot = slots[jj, rr, cc]
                                    if kernels:
                                        total = builder.call(fma, [weights[jj], term, builder.load(slot)])
                                    else:
                                        total = builder.fadd(builder.load(slot), term, flags=("reassoc", "contract"))
                                    builder.store(total, slot)
                    out_base = builder.add(group_out, builder.mul(block, out_block_step))
                    for (jj, rr, cc), slot in slots.items():
                        place = builder.add(builder.mul(const(jj), out_stride), builder.mul(const(rr), out_row_step))
                        address = builder.gep(out, [builder.add(builder.add(out_base, place), const(cc * lanes))])
                        builder.store(builder.load(slot), builder.bitcast(address, vector_ptr), align=itemsize)
            return context.get_dummy_value()

        return signature, codegen

    return row_kernel


_ARGUMENTS = (
    "data, offsets, ranges, count, base, row_step, coef, out, out_start, out_stride, out_row_step, "
    "blocks, block_step, out_block_step, groups, coef_group_step, out_group_step, "
    "offsets_start, ranges_start, coef_start"
)


def _copy_kernel():
    """A Numba intrinsic ``copy(dst, dst_start, src, src_start, n)``: memcpy of n elements
    between flat arrays (no views, no bounds checks)."""
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def copy(typingctx, dst, dst_start, src, src_start, n):
        signature = types.void(dst, dst_start, src, src_start, n)

        def codegen(context, builder, sig, values):
            dst_v, dst_start, src_v, src_start, n = [
                context.cast(builder, value, kind, types.int64) if isinstance(kind, types.Integer) else value
                for value, kind in zip(values, sig.args)
            ]
            target = builder.gep(context.make_array(sig.args[0])(context, builder, dst_v).data, [dst_start])
            source = builder.gep(context.make_array(sig.args[2])(context, builder, src_v).data, [src_start])
            itemsize = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
            cgutils.raw_memcpy(builder, target, source, n, itemsize)
            return context.get_dummy_value()

        return signature, codegen

    return copy


def _family_source(name: str, shapes: list[tuple[int, int, int]], ranged: bool) -> tuple[str, dict]:
    """Source of ``name(vectors_total, kernels, nrows, ARGUMENTS)`` and the row kernels it
    calls: the row is covered in column blocks of at most MAX_VECTORS vectors, each block by
    the kernel compiled for its (vectors, kernels, nrows)."""
    kernels = {f"kernel_{v}_{j}_{r}": _row_kernel(v, j, r, ranged) for v, j, r in shapes}
    lines = [
        f"def {name}(vectors_total, lanes, kernels, nrows, {_ARGUMENTS}):",
        "    for first_vector in range(0, vectors_total, MAX_VECTORS):",
        "        vectors = min(MAX_VECTORS, vectors_total - first_vector)",
        "        column = first_vector * lanes",
        "        base_c, out_start_c = base + column, out_start + column",
    ]
    call_args = _ARGUMENTS.replace("base,", "base_c,").replace("out_start,", "out_start_c,")
    for index, (v, j, r) in enumerate(shapes):
        lines.append(f"        {'if' if index == 0 else 'elif'} vectors == {v} and kernels == {j} and nrows == {r}:")
        lines.append(f"            kernel_{v}_{j}_{r}({call_args})")
    return "\n".join(lines) + "\n", kernels


# --------------------------------------------------------------------------- operator
@functools.lru_cache(maxsize=None)
def _compiled():
    """Compile-on-first-use operator (numba is imported here, never at module import)."""
    import numba
    from numba import prange

    jit = functools.partial(numba.njit, fastmath=_FASTMATH, nogil=True)
    vectors = range(1, MAX_VECTORS + 1)
    families = {
        # Stage 1: two kernels (or one, for an odd count) x two rows (or one) per pass.
        "conv_rows": ([(v, j, r) for v in vectors for j in (1, 2) for r in (1, 2)], False),
        # Stage 2, horizontal and identity: plain sums, every row the same moves.
        "gather_rows": ([(v, 0, r) for v in vectors for r in (1, 2)], False),
        # Stage 2, vertical: plain sums over a per-row-pair range of the (sorted) moves.
        "ranged_rows": ([(v, 0, r) for v in vectors for r in (1, 2)], True),
    }
    calls = {}
    for name, (shapes, ranged) in families.items():
        source, namespace = _family_source(name, shapes, ranged)
        namespace["MAX_VECTORS"] = MAX_VECTORS
        exec(source, namespace)  # noqa: S102 - fixed, generated dispatch over compiled shapes
        calls[name] = jit(namespace[name])
    conv_rows, gather_rows, ranged_rows = calls["conv_rows"], calls["gather_rows"], calls["ranged_rows"]

    copy = _copy_kernel()

    @numba.njit(parallel=True, fastmath=_FASTMATH)
    def operator(x, w, staged, n_staged, h_moves, n_h, v_moves, n_v, i_moves, n_i, left, taps,
                 lanes, conv_vectors, out_vectors, x_stride, y_stride, plane,
                 xbuf, ybuf, abuf, out_h, out_v, out_i):  # fmt: skip
        """x and the outputs are (B, C, H, W) C-order arrays, the scratch areas (threads, size).
        The per-task body indexes all of them flat with explicit offsets and never makes array
        views: a view's reference count is shared between threads, and its atomic updates cost
        more than the work of a task on small maps."""
        batch, channels, height, width = x.shape
        k = int(np.sqrt(taps) + 0.5)
        p = k - 1
        e = p - k // 2
        hy = height + 2 * e
        threads = xbuf.shape[0]
        x_flat = x.reshape(-1)
        h_flat, v_flat, i_flat = out_h.reshape(-1), out_v.reshape(-1), out_i.reshape(-1)
        x_size, y_size, acc_size = xbuf.shape[1], ybuf.shape[1], abuf.shape[1]
        xs, ys, accs = xbuf.reshape(-1), ybuf.reshape(-1), abuf.reshape(-1)
        row_length = out_vectors * lanes
        pairs, odd = height // 2, height % 2
        weights_per_channel = staged.shape[1] * taps
        tap_offsets = np.empty(taps, dtype=np.int64)
        for u in range(k):
            for v in range(k):
                tap_offsets[u * k + v] = u * x_stride + v
        most_moves = max(h_moves.shape[1], v_moves.shape[1], i_moves.shape[1])
        offsets = np.empty(threads * most_moves, dtype=np.int64)
        ranges = np.empty(threads * 2 * (pairs + odd), dtype=np.int64)
        for task in prange(batch * channels):
            t = numba.get_thread_id()
            b = task // channels
            c = task - b * channels
            x0, y0, a0 = t * x_size, t * y_size, t * acc_size  # this thread's scratch
            o0, r0 = t * most_moves, t * 2 * (pairs + odd)
            plane_at = task * height * width  # of x and the outputs
            for i in range(height):
                copy(xs, x0 + (p + i) * x_stride + p, x_flat, plane_at + i * width, width)
            # Stage 1: the staged kernels' y planes; plane r's row a starts at
            # (1 + r*(hy + 1) + a) * y_stride + left. Kernel pairs x row pairs, then the odd ones.
            n = n_staged[c]
            for kernels in (2, 1):
                groups = n // 2 if kernels == 2 else n % 2
                if groups:
                    first_plane = 0 if kernels == 2 else n - 1
                    out_at = y0 + y_stride + left + first_plane * plane
                    coef_at = c * weights_per_channel + first_plane * taps
                    if hy // 2:
                        conv_rows(conv_vectors, lanes, kernels, 2, xs, tap_offsets, tap_offsets, taps, x0, x_stride,
                                  w, ys, out_at, plane, y_stride, hy // 2, 2 * x_stride, 2 * y_stride,
                                  groups, 2 * taps, 2 * plane, 0, 0, coef_at)  # fmt: skip
                    if hy % 2:
                        a = hy - 1
                        conv_rows(conv_vectors, lanes, kernels, 1, xs, tap_offsets, tap_offsets, taps,
                                  x0 + a * x_stride, 0, w, ys, out_at + a * y_stride, plane, 0, 1, 0, 0,
                                  groups, 2 * taps, 2 * plane, 0, 0, coef_at)  # fmt: skip
            # Stage 2, horizontal and identity: every output row reads the same columns.
            for branch in range(2):
                count = n_h[c] if branch == 0 else n_i[c]
                for m in range(count):
                    if branch == 0:
                        offsets[o0 + m] = (1 + h_moves[c, m, 0] * (hy + 1)) * y_stride + h_moves[c, m, 1]
                    else:
                        offsets[o0 + m] = (1 + i_moves[c, m, 0] * (hy + 1)) * y_stride + i_moves[c, m, 1]
                if pairs:
                    gather_rows(out_vectors, lanes, 0, 2, ys, offsets, offsets, count, y0 + e * y_stride, y_stride,
                                accs, accs, a0, 0, row_length, pairs, 2 * y_stride, 2 * row_length, 1, 0, 0,
                                o0, 0, 0)  # fmt: skip
                if odd:
                    i = height - 1
                    gather_rows(out_vectors, lanes, 0, 1, ys, offsets, offsets, count, y0 + (i + e) * y_stride, 0,
                                accs, accs, a0 + i * row_length, 0, 0, 1, 0, 0, 1, 0, 0, o0, 0, 0)  # fmt: skip
                out_flat = h_flat if branch == 0 else i_flat
                for i in range(height):
                    copy(out_flat, plane_at + i * width, accs, a0 + i * row_length, width)
            # Vertical: moves sorted by increasing shift s; output row i reads source row i - s,
            # on the map for s in (i - hy, i]: a contiguous range of the list per row pair (the
            # pair's other row then reads a zero row between planes).
            count = n_v[c]
            for m in range(count):
                offsets[o0 + m] = (1 + v_moves[c, m, 0] * (hy + 1) - v_moves[c, m, 1]) * y_stride + left + e
            first = 0
            last = 0
            for block in range(pairs + odd):
                i = 2 * block
                while first < count and v_moves[c, first, 1] <= i - hy:
                    first += 1
                while last < count and v_moves[c, last, 1] <= min(i + 1, height - 1):
                    last += 1
                ranges[r0 + 2 * block] = first
                ranges[r0 + 2 * block + 1] = max(0, last - first)
            if pairs:
                ranged_rows(out_vectors, lanes, 0, 2, ys, offsets, ranges, count, y0, y_stride, accs,
                            accs, a0, 0, row_length, pairs, 2 * y_stride, 2 * row_length, 1, 0, 0,
                            o0, r0, 0)  # fmt: skip
            if odd:
                i = height - 1
                ranged_rows(out_vectors, lanes, 0, 1, ys, offsets, ranges, count, y0 + i * y_stride, 0,
                            accs, accs, a0 + i * row_length, 0, 0, 1, 0, 0, 1, 0, 0,
                            o0, r0 + 2 * pairs, 0)  # fmt: skip
            for i in range(height):
                copy(v_flat, plane_at + i * width, accs, a0 + i * row_length, width)

    return operator


def forward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    """The three branches (h, v, i) of the SW operator, each shaped like x."""
    import numba

    batch, channels, height, width = x.shape
    tables = _tables(spec, height, width)
    xs = x.detach().contiguous().numpy()
    layout = _layout(spec, tables, height, width, xs.itemsize)
    # Weights of the staged kernels, per channel in plane order; padding entries are zeros
    # (never used), so no pruned (possibly NaN) kernel is copied into the sums' operands.
    small = weight.detach().reshape(channels, spec.nk, spec.small_kernel**2).numpy()
    picked = np.take_along_axis(small, tables.staged[:, :, None].astype(np.int64), axis=1)
    used = np.arange(tables.staged.shape[1])[None, :] < tables.n_staged[:, None]
    staged_weights = np.ascontiguousarray(np.where(used[:, :, None], picked, 0), dtype=xs.dtype)
    buffers = _scratch_buffers(layout, xs.dtype, numba.get_num_threads())
    outputs = [torch.empty(x.shape, dtype=x.dtype) for _ in range(3)]
    _compiled()(
        xs, staged_weights.reshape(-1), *tables.arrays(), tables.left, spec.small_kernel**2, layout.lanes, layout.conv_vectors,
        layout.out_vectors, layout.x_stride, layout.y_stride, layout.plane, *buffers,
        *(o.numpy() for o in outputs),
    )  # fmt: skip
    return Branches(*outputs)


def traffic(spec: ShiftwiseSpec, shape: tuple[int, int, int, int], itemsize: int) -> int:
    """Bytes this design moves to and from memory: x read once (one pass per plane), the
    staged kernels' weights and this file's int32 tables once, the three outputs written once.
    The padded x plane, the y planes (a per-thread buffer of ~nk*(H+2e+1)*(row with margins)
    elements, in L2) and the output row accumulators stay in the core's caches and are not
    counted."""
    batch, channels, height, width = shape
    tables = _tables(spec, height, width)
    staged_weights = int(tables.n_staged.sum()) * spec.small_kernel**2
    pixels = batch * channels * height * width
    return itemsize * (pixels + staged_weights + 3 * pixels) + tables.nbytes

