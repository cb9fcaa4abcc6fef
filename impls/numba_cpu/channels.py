"""The channels form: lanes over channels, the three branches as the slot-merged depthwise
kernels with their taps clipped to the map (see the package docstring for when it is used).

One task per (image, block of ``lanes`` channels): the block's input is transposed once into a
per-thread (H+2r) x (W+2r) x lanes scratch (r = k//2, a zero border), then every output
vector (one pixel, ``lanes`` channels) is summed in registers by a row kernel:

- horizontal: for output column x, the merged kernel columns whose input column is on the map
  (``max(0, M//2 - x) <= col < min(nk*k, M//2 + W - x)``), for a block of up to 16 rows;
- vertical: the same along rows, for a block of up to 16 columns;
- identity: the k x k kernel.

With k = 3 the row kernel is a stencil: a term is one kernel column, its k weight vectors are
loaded once and every input vector feeds up to k accumulators (about 0.5 loads per FMA);
other k use a plain one-tap-per-term kernel. Outputs are written NHWC into buffers padded to
whole blocks of channels and returned as (B, C, H, W) views (channels_last strides).
The merged kernels (sum over groups of the active kernels at each slot, pruned kernels never
read) are built by ``merge`` and memoized by the caller on the weight's contents.
"""

from __future__ import annotations

import functools

import numpy as np

from .vectors import VECTOR_BYTES, store_rows, vector_fma, zeroed_accumulators

_FASTMATH = {"reassoc", "contract"}
#: Bytes per SIMD vector: one AVX-512 register (16 float32 / 8 float64 channels).
#: Block sizes (rows or columns per call) compiled for the stencil (k = 3) and generic kernels.
STENCIL_ROWS = (1, 2, 4, 7, 8, 14, 16)
GENERIC_ROWS = (1, 2, 4, 8)
_ARGS = "wts, src, offs, count, wbase, xbase, step, out, obase, ostep, offs_start"
_SARGS = "wts, src, offs, count, wbase, wstride, xbase, step, out, obase, ostep, offs_start"


def _tap_kernel(rows: int, init: str = "zero"):
    """``taps(wts, src, offs, count, wbase, xbase, step, out, obase, ostep, offs_start[, bias, bbase])``:
    for rr < rows: out[obase + rr*ostep : +lanes] = start + sum_{m<count} wts[wbase + offs[2m] : +lanes]
    * src[xbase + rr*step + offs[2m+1] : +lanes] (FMA, accumulators in registers), where start
    is zero, the out rows themselves (``init="load"``: accumulate) or ``bias[bbase : +lanes]``
    (``init="bias"``)."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    i64 = ir.IntType(64)

    def codegen(context, builder, sig, values):
        values = [
            context.cast(builder, v, t, types.int64) if isinstance(t, types.Integer) else v
            for v, t in zip(values, sig.args)
        ]
        wts_v, src_v, offs_v, count, wbase, xbase, step, out_v, obase, ostep, offs_start = values[:11]
        w = context.make_array(sig.args[0])(context, builder, wts_v).data
        s = context.make_array(sig.args[1])(context, builder, src_v).data
        offs = builder.gep(context.make_array(sig.args[2])(context, builder, offs_v).data, [offs_start])
        o = context.make_array(sig.args[7])(context, builder, out_v).data
        vector, itemsize, lanes, fma = vector_fma(context, builder, sig.args[0].dtype)
        vptr = vector.as_pointer()
        slots = _initial_accumulators(context, builder, sig, values, init, rows, vector, itemsize, o, obase, ostep, 11)
        w0 = builder.gep(w, [wbase])
        s0 = builder.gep(s, [xbase])
        with cgutils.for_range(builder, count) as loop:
            m2 = builder.mul(loop.index, ir.Constant(i64, 2))
            woff = builder.sext(builder.load(builder.gep(offs, [m2])), i64)
            xoff = builder.sext(builder.load(builder.gep(offs, [builder.add(m2, ir.Constant(i64, 1))])), i64)
            weight = builder.load(builder.bitcast(builder.gep(w0, [woff]), vptr), align=itemsize)
            sx = builder.gep(s0, [xoff])
            for rr, slot in enumerate(slots):
                address = builder.gep(sx, [builder.mul(ir.Constant(i64, rr), step)])
                term = builder.load(builder.bitcast(address, vptr), align=itemsize)
                builder.store(builder.call(fma, [weight, term, builder.load(slot)]), slot)
        store_rows(builder, o, obase, ostep, slots, vector, itemsize)
        return context.get_dummy_value()


    if init == "bias":

        @intrinsic
        def taps(typingctx, wts, src, offs, count, wbase, xbase, step, out, obase, ostep, offs_start, bias, bbase):
            return types.void(wts, src, offs, count, wbase, xbase, step, out, obase, ostep, offs_start, bias, bbase), codegen

    else:

        @intrinsic
        def taps(typingctx, wts, src, offs, count, wbase, xbase, step, out, obase, ostep, offs_start):
            return types.void(wts, src, offs, count, wbase, xbase, step, out, obase, ostep, offs_start), codegen

    return taps


def _stencil_kernel(rows: int, taps: int, init: str = "zero"):
    """``stencil(wts, src, offs, count, wbase, wstride, xbase, step, out, obase, ostep, offs_start[, bias, bbase])``:
    for rr < rows: out[obase + rr*ostep : +lanes] = start + sum_{m<count} sum_{r<taps}
    wts[wbase + offs[2m] + r*wstride : +lanes] * src[xbase + offs[2m+1] + (rr + r)*step : +lanes].
    Each source vector is loaded once per term and feeds up to ``taps`` accumulators; start as
    in ``_tap_kernel``."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    i64 = ir.IntType(64)

    def codegen(context, builder, sig, values):
        values = [
            context.cast(builder, v, t, types.int64) if isinstance(t, types.Integer) else v
            for v, t in zip(values, sig.args)
        ]
        wts_v, src_v, offs_v, count, wbase, wstride, xbase, step, out_v, obase, ostep, offs_start = values[:12]
        w = context.make_array(sig.args[0])(context, builder, wts_v).data
        s = context.make_array(sig.args[1])(context, builder, src_v).data
        offs = builder.gep(context.make_array(sig.args[2])(context, builder, offs_v).data, [offs_start])
        o = context.make_array(sig.args[8])(context, builder, out_v).data
        vector, itemsize, lanes, fma = vector_fma(context, builder, sig.args[0].dtype)
        vptr = vector.as_pointer()
        slots = _initial_accumulators(context, builder, sig, values, init, rows, vector, itemsize, o, obase, ostep, 12)
        w0 = builder.gep(w, [wbase])
        s0 = builder.gep(s, [xbase])
        with cgutils.for_range(builder, count) as loop:
            m2 = builder.mul(loop.index, ir.Constant(i64, 2))
            woff = builder.sext(builder.load(builder.gep(offs, [m2])), i64)
            xoff = builder.sext(builder.load(builder.gep(offs, [builder.add(m2, ir.Constant(i64, 1))])), i64)
            wp = builder.gep(w0, [woff])
            weights = [
                builder.load(builder.bitcast(builder.gep(wp, [builder.mul(ir.Constant(i64, r), wstride)]), vptr), align=itemsize)
                for r in range(taps)
            ]
            sx = builder.gep(s0, [xoff])
            for q in range(rows + taps - 1):
                address = builder.gep(sx, [builder.mul(ir.Constant(i64, q), step)])
                term = builder.load(builder.bitcast(address, vptr), align=itemsize)
                for r in range(taps):
                    rr = q - r
                    if 0 <= rr < rows:
                        slot = slots[rr]
                        builder.store(builder.call(fma, [weights[r], term, builder.load(slot)]), slot)
        store_rows(builder, o, obase, ostep, slots, vector, itemsize)
        return context.get_dummy_value()


    if init == "bias":

        @intrinsic
        def stencil(typingctx, wts, src, offs, count, wbase, wstride, xbase, step, out, obase, ostep, offs_start, bias, bbase):
            args = (wts, src, offs, count, wbase, wstride, xbase, step, out, obase, ostep, offs_start, bias, bbase)
            return types.void(*args), codegen

    else:

        @intrinsic
        def stencil(typingctx, wts, src, offs, count, wbase, wstride, xbase, step, out, obase, ostep, offs_start):
            return types.void(wts, src, offs, count, wbase, wstride, xbase, step, out, obase, ostep, offs_start), codegen

    return stencil


def _initial_accumulators(context, builder, sig, values, init, rows, vector, itemsize, out, obase, ostep, extra):
    """The row kernels' accumulators, started at zero, at the out rows (``"load"``) or at the
    vector ``bias[bbase:]`` (``"bias"``: the arguments after the first ``extra``)."""
    from llvmlite import ir

    if init not in ("zero", "load", "bias"):
        raise ValueError(f"init must be 'zero', 'load' or 'bias', got {init!r}")
    slots = zeroed_accumulators(builder, vector, rows)
    if init == "load":
        i64 = ir.IntType(64)
        for row, slot in enumerate(slots):
            address = builder.gep(out, [builder.add(obase, builder.mul(ir.Constant(i64, row), ostep))])
            builder.store(builder.load(builder.bitcast(address, vector.as_pointer()), align=itemsize), slot)
    elif init == "bias":
        bias = context.make_array(sig.args[extra])(context, builder, values[extra]).data
        start = builder.load(builder.bitcast(builder.gep(bias, [values[extra + 1]]), vector.as_pointer()), align=itemsize)
        for slot in slots:
            builder.store(start, slot)
    return slots


def _transpose_kernel():
    """``transpose(src, sbase, sstride, dst, dbase, pix_at, p0)``: a lanes x lanes transpose in
    registers. Loads row l = src[sbase + l*sstride + p0 : +lanes] (channel l, pixels p0..),
    swaps the off-diagonal blocks at every power-of-two level (log2(lanes) rounds of
    shufflevector), and stores column q (pixel p0+q, all channels) at dst[dbase + pix_at[p0+q]]."""
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    i64 = ir.IntType(64)
    i32 = ir.IntType(32)

    @intrinsic
    def transpose(typingctx, src, sbase, sstride, dst, dbase, pix_at, p0):
        sig_ = types.void(src, sbase, sstride, dst, dbase, pix_at, p0)

        def codegen(context, builder, sig, values):
            values = [
                context.cast(builder, v, t, types.int64) if isinstance(t, types.Integer) else v
                for v, t in zip(values, sig.args)
            ]
            src_v, sbase, sstride, dst_v, dbase, pix_v, p0 = values
            s = context.make_array(sig.args[0])(context, builder, src_v).data
            d = context.make_array(sig.args[3])(context, builder, dst_v).data
            pix = context.make_array(sig.args[5])(context, builder, pix_v).data
            element = context.get_data_type(sig.args[0].dtype)
            itemsize = context.get_abi_sizeof(element)
            lanes = VECTOR_BYTES // itemsize
            vector = ir.VectorType(element, lanes)
            vptr = vector.as_pointer()
            start = builder.add(sbase, p0)
            rows = []
            for l in range(lanes):
                address = builder.gep(s, [builder.add(start, builder.mul(ir.Constant(i64, l), sstride))])
                rows.append(builder.load(builder.bitcast(address, vptr), align=itemsize))
            b = lanes // 2
            while b >= 1:
                low = [j if (j // b) % 2 == 0 else lanes + j - b for j in range(lanes)]
                high = [j + b if (j // b) % 2 == 0 else lanes + j for j in range(lanes)]
                for i in range(lanes):
                    if (i // b) % 2 == 0:
                        a, c = rows[i], rows[i + b]
                        rows[i] = builder.shuffle_vector(a, c, ir.Constant(ir.VectorType(i32, lanes), low))
                        rows[i + b] = builder.shuffle_vector(a, c, ir.Constant(ir.VectorType(i32, lanes), high))
                b //= 2
            for q in range(lanes):
                at = builder.load(builder.gep(pix, [builder.add(p0, ir.Constant(i64, q))]))
                address = builder.gep(d, [builder.add(dbase, at)])
                builder.store(rows[q], builder.bitcast(address, vptr), align=itemsize)
            return context.get_dummy_value()

        return sig_, codegen

    return transpose


@functools.lru_cache(maxsize=None)
def row_kernels(init: str):
    """``(taps, stencil)``: dispatchers over the compiled block sizes of the two row kernels,
    whose accumulators start as ``init`` says (``_initial_accumulators``)."""
    import numba

    extra = ", bias, bbase" if init == "bias" else ""
    namespace = {f"taps_{r}": _tap_kernel(r, init) for r in GENERIC_ROWS}
    namespace.update({f"stencil_{r}": _stencil_kernel(r, 3, init) for r in STENCIL_ROWS})
    lines = [f"def taps(rows, {_ARGS}{extra}):"]
    for n, r in enumerate(GENERIC_ROWS):
        lines.append(f"    {'if' if n == 0 else 'elif'} rows == {r}:")
        lines.append(f"        taps_{r}({_ARGS}{extra})")
    lines.append(f"def stencil(rows, {_SARGS}{extra}):")
    for n, r in enumerate(STENCIL_ROWS):
        lines.append(f"    {'if' if n == 0 else 'elif'} rows == {r}:")
        lines.append(f"        stencil_{r}({_SARGS}{extra})")
    exec("\n".join(lines) + "\n", namespace)  # noqa: S102 - fixed dispatch over compiled block sizes
    taps = numba.njit(fastmath=_FASTMATH, nogil=True, inline="always")(namespace["taps"])
    stencil = numba.njit(fastmath=_FASTMATH, nogil=True, inline="always")(namespace["stencil"])
    return taps, stencil


@functools.lru_cache(maxsize=None)
def helpers():
    """``(cover, aligned, term_tables)``: the block cover of a row or column, a 64-byte aligned
    zeroed array, and the clipped term tables of the merged kernels for one map size."""
    import numba

    stencil_rows = np.array(STENCIL_ROWS[::-1], np.int64)
    generic_rows = np.array(GENERIC_ROWS[::-1], np.int64)

    @numba.njit(nogil=True)
    def cover(total, fast):
        """Blocks (start, size) covering 0..total-1 with the compiled kernel sizes: equal
        blocks of 14 or 16 if they fit exactly, else greedily largest first."""
        sizes = stencil_rows if fast else generic_rows
        starts = np.zeros(total, np.int64)
        lengths = np.zeros(total, np.int64)
        n = 0
        at = 0
        for even in (14, 16):
            if fast and total % even == 0:
                while at < total:
                    starts[n] = at
                    lengths[n] = even
                    n += 1
                    at += even
        while at < total:
            for size in sizes:
                if size <= total - at:
                    starts[n] = at
                    lengths[n] = size
                    n += 1
                    at += size
                    break
        return starts[:n], lengths[:n]

    @numba.njit(nogil=True)
    def aligned(n, dtype):
        # A zeroed flat array whose data starts on a 64-byte boundary.
        raw = np.zeros(n + 64, dtype)
        skip = ((64 - raw.ctypes.data % 64) % 64) // raw.itemsize
        return raw[skip : skip + n]

    @numba.njit(nogil=True)
    def term_tables(height, width, nk, k, big, lanes):
        """(h_terms, h_count, v_terms, v_count, i_terms, i_count): the (weight offset, scratch
        offset) pairs of each output column's horizontal terms, each row's vertical terms and
        the identity's, clipped to the map. With k = 3 a term is one kernel column (h) / row (v)
        and the stencil kernel applies its k taps; else a term is one tap."""
        kk = k // 2
        half = big // 2
        ncols = nk * k
        sw = width + 2 * kk
        per = 1 if k == 3 else k
        h_terms = np.zeros((width, 2 * per * ncols), np.int64)
        h_count = np.zeros(width, np.int64)
        for xo in range(width):
            m = 0
            for r in range(per):
                for cc in range(max(0, half - xo), min(ncols, half + width - xo)):
                    h_terms[xo, 2 * m] = (r * ncols + cc) * lanes
                    h_terms[xo, 2 * m + 1] = ((r - kk) * sw + xo + cc - half) * lanes
                    m += 1
            h_count[xo] = m
        v_terms = np.zeros((height, 2 * per * ncols), np.int64)
        v_count = np.zeros(height, np.int64)
        for i in range(height):
            m = 0
            for rr in range(max(0, half - i), min(ncols, half + height - i)):
                for v in range(per):
                    v_terms[i, 2 * m] = (rr * k + v) * lanes
                    v_terms[i, 2 * m + 1] = ((i + rr - half) * sw + v - kk) * lanes
                    m += 1
            v_count[i] = m
        i_terms = np.zeros(2 * k * per, np.int64)
        for u in range(per):
            for v in range(k):
                i_terms[2 * (u * k + v)] = (u * k + v) * lanes
                i_terms[2 * (u * k + v) + 1] = ((u - kk) * sw + v - kk) * lanes
        return h_terms, h_count, v_terms, v_count, i_terms, k * per

    return cover, aligned, term_tables


@functools.lru_cache(maxsize=None)
def compiled():
    """``(merge, operator, same)``, compiled on first use (numba is imported here, not at import)."""
    import numba
    from numba import prange

    taps, stencil = row_kernels("zero")
    transpose = _transpose_kernel()
    cover, aligned, term_tables = helpers()

    @numba.njit(parallel=True)
    def merge(w, kslot_h, kslot_v, ident, active, lanes):
        """Merged kernels, lanes over channels, flat and 64-byte aligned: kh[blk, r, col, l],
        kv[blk, row, v, l], ki[blk, u, v, l]. w is (C*nk, k, k); kslot_*[g, c, t] is the kernel
        at slot t; a pruned kernel is never read (its weights may be NaN)."""
        groups, channels, nk = kslot_h.shape
        k = w.shape[1]
        kk2 = k * k
        ncols = nk * k
        nblocks = (channels + lanes - 1) // lanes
        kh_f = aligned(nblocks * k * ncols * lanes, w.dtype)
        kv_f = aligned(nblocks * ncols * k * lanes, w.dtype)
        ki_f = aligned(nblocks * kk2 * lanes, w.dtype)
        w_f = w.reshape(-1)
        for blk in prange(nblocks):
            for l in range(min(lanes, channels - blk * lanes)):
                c = blk * lanes + l
                for g in range(groups):
                    for t in range(nk):
                        j = kslot_h[g, c, t]
                        if active[c, j]:
                            src = (c * nk + j) * kk2
                            dst = (blk * k * ncols + t * k) * lanes + l
                            for u in range(k):
                                for v in range(k):
                                    kh_f[dst + (u * ncols + v) * lanes] += w_f[src + u * k + v]
                        j = kslot_v[g, c, t]
                        if active[c, j]:
                            src = (c * nk + j) * kk2
                            dst = (blk * ncols + t * k) * k * lanes + l
                            for u in range(kk2):
                                kv_f[dst + u * lanes] += w_f[src + u]
                    j = ident[g, c]
                    if active[c, j]:
                        src = (c * nk + j) * kk2
                        dst = blk * kk2 * lanes + l
                        for u in range(kk2):
                            ki_f[dst + u * lanes] += w_f[src + u]
        return kh_f, kv_f, ki_f

    @numba.njit(parallel=True, fastmath=_FASTMATH)
    def operator(x, nhwc, kh_f, kv_f, ki_f, nk, k, big, lanes, out_h, out_v, out_i):
        """x: (B, C, H, W), or (B, H, W, C) if nhwc; the merged kernels from ``merge``;
        outputs (B, H, W, Cpad) with Cpad = C rounded up to whole lane blocks."""
        if nhwc:
            batch, height, width, channels = x.shape
        else:
            batch, channels, height, width = x.shape
        kk = k // 2
        half = big // 2
        ncols = nk * k
        nblocks = (channels + lanes - 1) // lanes
        cpad = nblocks * lanes
        dtype = kh_f.dtype
        sw = width + 2 * kk
        sh = height + 2 * kk
        fast = k == 3
        h_terms, h_count, v_terms, v_count, i_terms, i_count = term_tables(height, width, nk, k, big, lanes)
        row_starts, row_sizes = cover(height, fast)
        col_starts, col_sizes = cover(width, fast)
        threads = numba.get_num_threads()
        plane = sh * sw * lanes
        plane = -(-plane // lanes) * lanes
        scratch = aligned(threads * plane, dtype)

        ho_f, vo_f, io_f = out_h.reshape(-1), out_v.reshape(-1), out_i.reshape(-1)
        x_f = x.reshape(-1)
        pix_at = np.empty(height * width, np.int64)  # scratch offset of pixel p = i*W + x
        for i in range(height):
            for xo in range(width):
                pix_at[i * width + xo] = ((i + kk) * sw + xo + kk) * lanes
        for task in prange(batch * nblocks):
            tid = numba.get_thread_id()
            b = task // nblocks
            blk = task - b * nblocks
            c0 = blk * lanes
            valid = min(lanes, channels - c0)
            s0 = tid * plane
            if nhwc:
                for i in range(height):
                    for xo in range(width):
                        at = s0 + ((i + kk) * sw + xo + kk) * lanes
                        src = ((b * height + i) * width + xo) * channels + c0
                        for l in range(valid):
                            scratch[at + l] = x_f[src + l]
            elif valid == lanes:
                # Whole blocks of lanes pixels in registers, the remaining pixels one by one.
                sbase = (b * channels + c0) * height * width
                whole = (height * width) // lanes * lanes
                for p0 in range(0, whole, lanes):
                    transpose(x_f, sbase, height * width, scratch, s0, pix_at, p0)
                for p in range(whole, height * width):
                    at = s0 + pix_at[p]
                    for l in range(lanes):
                        scratch[at + l] = x_f[sbase + l * height * width + p]
            else:
                for l in range(valid):
                    src = (b * channels + c0 + l) * height * width
                    for i in range(height):
                        at = s0 + ((i + kk) * sw + kk) * lanes + l
                        for xo in range(width):
                            scratch[at + xo * lanes] = x_f[src + i * width + xo]
            wb = blk * k * ncols * lanes
            wv = blk * ncols * k * lanes
            wi = blk * k * k * lanes
            ob = b * height * width * cpad + c0
            hstride = ncols * lanes
            for xo in range(width):
                for rb in range(row_starts.size):
                    i0 = row_starts[rb]
                    rows = row_sizes[rb]
                    xb = s0 + ((i0 + kk) * sw + kk) * lanes
                    o = ob + (i0 * width + xo) * cpad
                    if fast:
                        stencil(rows, kh_f, scratch, h_terms, h_count[xo], wb, hstride, xb, sw * lanes, ho_f, o, width * cpad, xo * 2 * ncols)
                        stencil(rows, ki_f, scratch, i_terms, i_count, wi, k * lanes, xb + xo * lanes, sw * lanes, io_f, o, width * cpad, 0)
                    else:
                        taps(rows, kh_f, scratch, h_terms, h_count[xo], wb, xb, sw * lanes, ho_f, o, width * cpad, xo * 2 * k * ncols)
                        taps(rows, ki_f, scratch, i_terms, i_count, wi, xb + xo * lanes, sw * lanes, io_f, o, width * cpad, 0)
            for i in range(height):
                for cb in range(col_starts.size):
                    x0 = col_starts[cb]
                    cols = col_sizes[cb]
                    xb = s0 + (kk * sw + kk + x0) * lanes
                    o = ob + (i * width + x0) * cpad
                    if fast:
                        stencil(cols, kv_f, scratch, v_terms, v_count[i], wv, lanes, xb, lanes, vo_f, o, cpad, i * 2 * ncols)
                    else:
                        taps(cols, kv_f, scratch, v_terms, v_count[i], wv, xb, lanes, vo_f, o, cpad, i * 2 * k * ncols)

    @numba.njit(nogil=True)
    def same(a, b):
        """Equality of two equal-length flat unsigned-integer views (the weights' bits)."""
        if a.size == 0:
            return True
        diff = a[0] ^ a[0]
        for n in range(a.size):
            diff |= a[n] ^ b[n]
        return diff == 0

    return merge, operator, same


@functools.lru_cache(maxsize=64)
def slot_tables(spec) -> tuple[np.ndarray, ...]:
    """kslot_h[g, c, t] / kslot_v: the kernel j at slot t (the inverse of spec.slot_*), the
    identity picks and the active mask, as the compiled code takes them."""

    def inverse(slots: np.ndarray) -> np.ndarray:
        inv = np.empty(slots.shape, dtype=np.int64)
        g, c, j = np.indices(slots.shape)
        inv[g, c, slots] = j
        return inv

    return (
        inverse(spec.slot_h), inverse(spec.slot_v),
        np.ascontiguousarray(spec.ident, dtype=np.int64), np.ascontiguousarray(spec.active, dtype=np.bool_),
    )  # fmt: skip


def valid_taps(spec, height: int, width: int) -> int:
    """Multiply-adds per output pixel and channel, summed over the map: the merged kernels'
    taps whose input is on the map (what this form executes, per lane)."""
    half, ncols, k = spec.big_kernel // 2, spec.nk * spec.small_kernel, spec.small_kernel
    h = sum(max(0, min(ncols, half + width - x) - max(0, half - x)) for x in range(width)) * height * k
    v = sum(max(0, min(ncols, half + height - i) - max(0, half - i)) for i in range(height)) * width * k
    return h + v + height * width * k * k
