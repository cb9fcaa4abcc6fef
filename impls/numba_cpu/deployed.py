"""numba_cpu's deployed SW layer in one pass (the paper's appendix B.4 on this CPU).

After ``reparameterize()`` an SW layer is a fixed linear map per channel, followed in the block
by an affine BatchNorm. This computes, in one call that reads ``x`` once and writes the output
once (B, C, H, W, channels_last strides):

    out[:, :repN] = a * (s_h * h + s_v * v + s_i * i + bias + x[:, rep]) + b
    out[:, repN:] = a * x[:, ghost] + b

with (h, v, i) the SW operator's branches of the rep channels, (a, b) the following
BatchNorm's per-channel scale and shift, ``s_*`` the folded branch BatchNorms. Everything
except the operator is folded into its kernels on the host (memoized on the parameters' bits):
the channels form's slot-merged kernels are scaled by ``a * s_*``, the identity residual adds
``a`` at the identity kernel's centre, and ``a * bias + b`` starts the accumulators. Per task
(one image, one block of 16 rep channels, gathered by index into the per-thread scratch) the
identity and horizontal terms of a column block, then the vertical terms of a row block, are
summed into the output rows (the block's rows stay in the core's L1/L2 between the passes);
the ghost channels are scaled and stored at their place after the SW channels.
"""

from __future__ import annotations

import functools
import threading
import weakref

import numpy as np
import torch

from harness import ShiftwiseSpec

from . import channels
from .vectors import VECTOR_BYTES, vector_fma

_FASTMATH = {"reassoc", "contract"}
_lock = threading.Lock()
#: (id(spec), the weight's address, dtype, lanes) -> (weak spec, the parameters' copies, the
#: folded kernels). Layers of one stage share a spec: the address keeps their entries apart.
_folded: dict = {}


def _splat(builder, value, lanes: int):
    from llvmlite import ir

    vector = ir.VectorType(value.type, lanes)
    one = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vector, None), ir.Constant(ir.VectorType(ir.IntType(32), lanes), None))


def _call_intrinsic(builder, name: str, ret, args):
    from llvmlite import ir

    try:
        fn = builder.module.get_global(name)
    except KeyError:
        fn = ir.Function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name=name)
    return builder.call(fn, args)


@functools.lru_cache(maxsize=None)
def _gather_kernel(affine: bool):
    """``gather(src, sbase, idx, ibase, count, dst, dbase[, scale, shift])``: for l < lanes,
    dst[dbase + l] = src[sbase + idx[ibase + l]] (``affine``: scale[ibase + l] * that +
    shift[ibase + l]) if l < count; else 0 (``affine``: dst[dbase + l] left as it was). One
    masked vector gather per call (``llvm.masked.gather``; LLVM lowers it to scalar loads where
    the machine has no gather); idx, scale and shift are read only below ``count``."""
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    i64 = ir.IntType(64)

    def codegen(context, builder, sig, values):
        values = [
            context.cast(builder, v, t, types.int64) if isinstance(t, types.Integer) else v
            for v, t in zip(values, sig.args)
        ]
        src_v, sbase, idx_v, ibase, count, dst_v, dbase = values[:7]
        data = lambda n: context.make_array(sig.args[n])(context, builder, values[n]).data  # noqa: E731
        element = context.get_data_type(sig.args[0].dtype)
        itemsize = context.get_abi_sizeof(element)
        lanes = VECTOR_BYTES // itemsize
        vector = ir.VectorType(element, lanes)
        index_vector = ir.VectorType(i64, lanes)
        mask = builder.icmp_signed("<", ir.Constant(index_vector, list(range(lanes))), _splat(builder, count, lanes))
        pointer = data(0).type
        suffix = f"v{lanes}{element.intrinsic_name}"

        def masked_load(vtype, address, align, name):
            ptr = builder.bitcast(address, vtype.as_pointer())
            return _call_intrinsic(builder, f"llvm.masked.load.{name}.{pointer.intrinsic_name}", vtype,
                                   [ptr, ir.Constant(ir.IntType(32), align), mask, ir.Constant(vtype, None)])  # fmt: skip

        indices = masked_load(index_vector, builder.gep(data(2), [ibase]), 8, f"v{lanes}i64")
        base = builder.ptrtoint(builder.gep(data(0), [sbase]), i64)
        addresses = builder.add(_splat(builder, base, lanes), builder.mul(indices, _splat(builder, ir.Constant(i64, itemsize), lanes)))
        pointers = builder.inttoptr(addresses, ir.VectorType(pointer, lanes))
        got = _call_intrinsic(builder, f"llvm.masked.gather.{suffix}.v{lanes}{pointer.intrinsic_name}", vector,
                              [pointers, ir.Constant(ir.IntType(32), itemsize), mask, ir.Constant(vector, None)])  # fmt: skip
        out = builder.bitcast(builder.gep(data(5), [dbase]), vector.as_pointer())
        if affine:
            scale = masked_load(vector, builder.gep(data(7), [ibase]), itemsize, suffix)
            shift = masked_load(vector, builder.gep(data(8), [ibase]), itemsize, suffix)
            _, _, _, fma = vector_fma(context, builder, sig.args[0].dtype)
            got = builder.call(fma, [scale, got, shift])
            _call_intrinsic(builder, f"llvm.masked.store.{suffix}.{pointer.intrinsic_name}", ir.VoidType(),
                            [got, out, ir.Constant(ir.IntType(32), itemsize), mask])  # fmt: skip
        else:
            builder.store(got, out, align=itemsize)
        return context.get_dummy_value()

    if affine:

        @intrinsic
        def gather(typingctx, src, sbase, idx, ibase, count, dst, dbase, scale, shift):
            return types.void(src, sbase, idx, ibase, count, dst, dbase, scale, shift), codegen

    else:

        @intrinsic
        def gather(typingctx, src, sbase, idx, ibase, count, dst, dbase):
            return types.void(src, sbase, idx, ibase, count, dst, dbase), codegen

    return gather


@functools.lru_cache(maxsize=None)
def compiled():
    """The layer kernel, compiled on first use."""
    import numba
    from numba import prange

    first_taps, first_stencil = channels.row_kernels("bias")
    taps, stencil = channels.row_kernels("load")
    cover, _, term_tables = channels.helpers()
    gather = _gather_kernel(False)
    gather_affine = _gather_kernel(True)

    @numba.njit(parallel=True, fastmath=_FASTMATH)
    def layer(x, nhwc, rep, ghost, kh_f, kv_f, ki_f, bias, ghost_scale, ghost_shift, nk, k, big, lanes, out, scratch):
        """x: (B, C, H, W), or (B, H, W, C) if nhwc; out: (B, H, W, Cs), Cs >= C and >= the
        rep channels rounded up to whole lane blocks (the last block's spare lanes land in the
        ghost channels' places, or past C, before the ghost channels are written); scratch:
        ``scratch_size`` elements, zero outside the planes' interiors (only those are written,
        so a zeroed scratch stays fit for later calls)."""
        if nhwc:
            batch, height, width, in_channels = x.shape
        else:
            batch, in_channels, height, width = x.shape
        cs = out.shape[3]
        repn = rep.size
        kk = k // 2
        ncols = nk * k
        nblocks = (repn + lanes - 1) // lanes
        sw = width + 2 * kk
        sh = height + 2 * kk
        fast = k == 3
        h_terms, h_count, v_terms, v_count, i_terms, i_count = term_tables(height, width, nk, k, big, lanes)
        row_starts, row_sizes = cover(height, fast)
        col_starts, col_sizes = cover(width, fast)
        plane = sh * sw * lanes
        o_f = out.reshape(-1)
        x_f = x.reshape(-1)
        hw = height * width
        for task in prange(batch * nblocks):
            s0 = numba.get_thread_id() * plane
            b = task // nblocks
            blk = task - b * nblocks
            c0 = blk * lanes
            valid = min(lanes, repn - c0)
            if nhwc:
                for i in range(height):
                    at = s0 + ((i + kk) * sw + kk) * lanes
                    for xo in range(width):
                        gather(x_f, ((b * height + i) * width + xo) * in_channels, rep, c0, valid, scratch, at + xo * lanes)
            else:
                for l in range(lanes):
                    if l < valid:
                        src = (b * in_channels + rep[c0 + l]) * hw
                        for i in range(height):
                            at = s0 + ((i + kk) * sw + kk) * lanes + l
                            for xo in range(width):
                                scratch[at + xo * lanes] = x_f[src + i * width + xo]
                    else:
                        for i in range(height):
                            at = s0 + ((i + kk) * sw + kk) * lanes + l
                            for xo in range(width):
                                scratch[at + xo * lanes] = 0.0
            wb = blk * k * ncols * lanes
            wv = blk * ncols * k * lanes
            wi = blk * k * k * lanes
            ob = b * hw * cs + c0
            hstride = ncols * lanes
            for xo in range(width):
                for rb in range(row_starts.size):
                    i0 = row_starts[rb]
                    rows = row_sizes[rb]
                    xb = s0 + ((i0 + kk) * sw + kk) * lanes
                    o = ob + (i0 * width + xo) * cs
                    if fast:
                        first_stencil(rows, ki_f, scratch, i_terms, i_count, wi, k * lanes, xb + xo * lanes, sw * lanes, o_f, o, width * cs, 0, bias, c0)
                        stencil(rows, kh_f, scratch, h_terms, h_count[xo], wb, hstride, xb, sw * lanes, o_f, o, width * cs, xo * 2 * ncols)
                    else:
                        first_taps(rows, ki_f, scratch, i_terms, i_count, wi, xb + xo * lanes, sw * lanes, o_f, o, width * cs, 0, bias, c0)
                        taps(rows, kh_f, scratch, h_terms, h_count[xo], wb, xb, sw * lanes, o_f, o, width * cs, xo * 2 * k * ncols)
            for i in range(height):
                for cb in range(col_starts.size):
                    x0 = col_starts[cb]
                    cols = col_sizes[cb]
                    xb = s0 + (kk * sw + kk + x0) * lanes
                    o = ob + (i * width + x0) * cs
                    if fast:
                        stencil(cols, kv_f, scratch, v_terms, v_count[i], wv, lanes, xb, lanes, o_f, o, cs, i * 2 * ncols)
                    else:
                        taps(cols, kv_f, scratch, v_terms, v_count[i], wv, xb, lanes, o_f, o, cs, i * 2 * k * ncols)
        for row in prange(batch * height):
            b = row // height
            i = row - b * height
            for xo in range(width):
                o = (row * width + xo) * cs + repn
                if nhwc:
                    src = (row * width + xo) * in_channels
                    for g0 in range(0, ghost.size, lanes):
                        gather_affine(x_f, src, ghost, g0, min(lanes, ghost.size - g0), o_f, o + g0, ghost_scale, ghost_shift)
                else:
                    for g in range(ghost.size):
                        src = ((b * in_channels + ghost[g]) * height + i) * width + xo
                        o_f[o + g] = ghost_scale[g] * x_f[src] + ghost_shift[g]

    return layer


def scratch_size(height: int, width: int, k: int, lanes: int, threads: int) -> int:
    """Elements of the layer kernel's scratch: one zero-bordered (H+2r) x (W+2r) x lanes plane per thread."""
    return threads * (height + 2 * (k // 2)) * (width + 2 * (k // 2)) * lanes


_scratch = threading.local()


def _scratch_buffer(size: int, dtype: np.dtype) -> np.ndarray:
    """A zeroed, 64-byte aligned scratch of ``size`` elements, kept per Python thread (so
    concurrent callers never share one) and per size and dtype (a few at a time) and reused:
    the kernel writes only the planes' interiors, so the zero borders survive every call."""
    cache = getattr(_scratch, "buffers", None)
    if cache is None:
        cache = _scratch.buffers = {}
    key = (size, dtype.str)
    buffer = cache.get(key)
    if buffer is None:
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        raw = np.zeros(size + 64 // dtype.itemsize, dtype)
        skip = (-raw.ctypes.data % 64) // dtype.itemsize
        buffer = cache[key] = raw[skip : skip + size]
    return buffer


def _fold(spec: ShiftwiseSpec, params: tuple[np.ndarray, ...], lanes: int) -> tuple[np.ndarray, ...]:
    """The channels form's merged kernels with the scales, identity and bias folded in."""
    weight, branch_scale, branch_bias, out_scale, out_shift = params
    repn, k, nk = spec.channels, spec.small_kernel, spec.nk
    merge, _, _ = channels.compiled()
    kh, kv, ki = merge(weight.reshape(repn * nk, k, k), *channels.slot_tables(spec), lanes)
    nblocks = -(-repn // lanes)

    def padded(values: np.ndarray) -> np.ndarray:
        full = np.zeros(nblocks * lanes, weight.dtype)
        full[:repn] = values
        return full.reshape(nblocks, 1, 1, lanes)

    scale = out_scale[:repn]
    kh.reshape(nblocks, k, nk * k, lanes)[...] *= padded(scale * branch_scale[0])
    kv.reshape(nblocks, nk * k, k, lanes)[...] *= padded(scale * branch_scale[1])
    ki_blocks = ki.reshape(nblocks, k, k, lanes)
    ki_blocks *= padded(scale * branch_scale[2])
    ki_blocks[:, k // 2, k // 2, :] += padded(scale)[:, 0, 0, :]  # the identity residual
    bias = padded(scale * branch_bias + out_shift[:repn]).reshape(-1)
    return kh, kv, ki, bias, np.ascontiguousarray(out_scale[repn:]), np.ascontiguousarray(out_shift[repn:])


def _folded_kernels(spec: ShiftwiseSpec, params: tuple[np.ndarray, ...], lanes: int) -> tuple[np.ndarray, ...]:
    """``_fold``'s arrays, memoized on the parameters' bits (a deployed layer's are fixed)."""
    key = (id(spec), params[0].ctypes.data, params[0].dtype.str, lanes)
    entry = _folded.get(key)
    if (
        entry is not None
        and entry[0]() is spec
        and all(a.shape == b.shape and a.dtype == b.dtype for a, b in zip(entry[1], params))
        and _unchanged()(*entry[1], *params)
    ):
        return entry[2]
    folded = _fold(spec, params, lanes)
    with _lock:
        if len(_folded) >= 256:
            _folded.pop(next(iter(_folded)))
        _folded[key] = (weakref.ref(spec), tuple(p.copy() for p in params), folded)
    return folded


@functools.lru_cache(maxsize=None)
def _unchanged():
    """``unchanged(a0..a4, b0..b4)``: whether each a_n has the bits of b_n (equal shapes and
    dtypes, C-contiguous; NaN compares by its bits): the memo's check, one call per layer call."""
    import numba

    @numba.njit(nogil=True, inline="always")
    def same(a, b):
        x, y = a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)
        diff = np.uint8(0)
        for n in range(x.size):
            diff |= x[n] ^ y[n]
        return diff == 0

    @numba.njit(nogil=True)
    def unchanged(a0, a1, a2, a3, a4, b0, b1, b2, b3, b4):
        return same(a0, b0) and same(a1, b1) and same(a2, b2) and same(a3, b3) and same(a4, b4)

    return unchanged


def numba_threads() -> int:
    """Numba's thread count for the next parallel call (what the kernel's scratch is sized for)."""
    import numba

    return numba.get_num_threads()


def deployed(
    x: torch.Tensor,
    weight: torch.Tensor,
    spec: ShiftwiseSpec,
    branch_scale: torch.Tensor,
    branch_bias: torch.Tensor,
    out_scale: torch.Tensor,
    out_shift: torch.Tensor,
    rep: torch.Tensor,
    ghost: torch.Tensor,
) -> torch.Tensor:
    """The deployed layer (module docstring) for x (B, C, H, W), any strides; returns
    (B, C, H, W) with channels_last strides (a view of a wider buffer when the rep channels'
    last lane block reaches past C)."""
    batch, in_channels, height, width = x.shape
    x = x.detach()
    nhwc = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    xs = x.permute(0, 2, 3, 1).numpy() if nhwc else x.contiguous().numpy()
    lanes = channels.VECTOR_BYTES // xs.itemsize
    k = spec.small_kernel
    params = tuple(
        np.ascontiguousarray(t.detach().numpy()) for t in (weight, branch_scale, branch_bias, out_scale, out_shift)
    )
    kh, kv, ki, bias, ghost_scale, ghost_shift = _folded_kernels(spec, params, lanes)
    width_out = max(in_channels, -(-spec.channels // lanes) * lanes)
    out = torch.empty((batch, height, width, width_out), dtype=x.dtype)
    scratch = _scratch_buffer(scratch_size(height, width, k, lanes, numba_threads()), xs.dtype)
    compiled()(xs, nhwc, rep.numpy(), ghost.numpy(), kh, kv, ki, bias, ghost_scale, ghost_shift,
               spec.nk, k, spec.big_kernel, lanes, out.numpy(), scratch)  # fmt: skip
    if width_out > in_channels:
        out = out[..., :in_channels]
    return out.permute(0, 3, 1, 2)
