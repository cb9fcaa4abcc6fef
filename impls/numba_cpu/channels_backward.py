"""The channels form's backward: lanes over channels, the gradients through the slot-merged
kernels (the forward's ``channels.py``), for the maps where the planes backward's short rows
and per-kernel passes cost more than its sums (SW-tiny stages 3 and 4).

The operator is three depthwise convs with the merged kernels K_h, K_v, K_i (the forward:
``out_b[p] = sum_t K_b[t] * x[p + d_t]``, taps t at offsets d_t, the long direction clipped to
the map, the short one zero-padded). So, per image and block of ``lanes`` channels:

- grad_x[p] = sum_b sum_t K_b[t] * g_b[p - d_t]: the same row kernels as the forward
  (``channels.row_kernels``: one FMA per tap and output vector, accumulators in registers) over
  the adjoint's term tables (``adjoint_tables``: offsets negated, clipped where p - d_t is on
  the map), the identity and vertical branches accumulated onto the horizontal's;
- grad_K_b[t] = sum_p g_b[p] * x[p + d_t]: the row kernel with the branch gradient in the
  weights' place and a block of consecutive taps in the rows' place, summed over every pixel
  of a copy of x padded wide enough that no tap needs clipping (its zeros add nothing);
- the small kernels' gradient (``unmerge``): each merged tap is a sum of small-kernel taps
  (``channels.compiled``'s ``merge``), so each small tap's gradient is the sum of the merged
  taps it went into; pruned kernels get exactly zero and their weights are never read.

The merged kernels' gradients are summed per image (one buffer per task: no two threads write
one place) and reduced over the batch at the end, so the result does not depend on the thread
count. Floating point: reassociation and FMA contraction only, within the reference's
order-independent ``gradient_bound``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import channels


@functools.lru_cache(maxsize=None)
def compiled():
    """``(grad_input, grad_kernels, unmerge)``, compiled on first use."""
    import numba
    from numba import prange

    taps_zero, _ = channels.row_kernels("zero")
    taps_load, _ = channels.row_kernels("load")
    transpose = channels._transpose_kernel()
    cover, aligned, _ = channels.helpers()

    @numba.njit(nogil=True)
    def adjoint_tables(height, width, nk, k, big, lanes):
        """grad_x's (weight offset, scratch offset) terms: the horizontal branch's per output
        column (scratch offsets from the row's first pixel), the vertical's per output row
        (from the block's first column of row 0), the identity's (from the pixel itself); the
        scratch is (H + 2r) x (W + 2r) x lanes, r = k // 2."""
        kk = k // 2
        half = big // 2
        ncols = nk * k
        sw = width + 2 * kk
        h_terms = np.zeros((width, 2 * k * ncols), np.int64)
        h_count = np.zeros(width, np.int64)
        for xo in range(width):
            m = 0
            for r in range(k):
                for cc in range(max(0, half + xo - width + 1), min(ncols, half + xo + 1)):
                    h_terms[xo, 2 * m] = (r * ncols + cc) * lanes
                    h_terms[xo, 2 * m + 1] = ((kk - r) * sw + xo + half - cc) * lanes
                    m += 1
            h_count[xo] = m
        v_terms = np.zeros((height, 2 * k * ncols), np.int64)
        v_count = np.zeros(height, np.int64)
        for i in range(height):
            m = 0
            for rr in range(max(0, half + i - height + 1), min(ncols, half + i + 1)):
                for v in range(k):
                    v_terms[i, 2 * m] = (rr * k + v) * lanes
                    v_terms[i, 2 * m + 1] = ((i + half - rr) * sw + kk - v) * lanes
                    m += 1
            v_count[i] = m
        i_terms = np.zeros(2 * k * k, np.int64)
        for u in range(k):
            for v in range(k):
                i_terms[2 * (u * k + v)] = (u * k + v) * lanes
                i_terms[2 * (u * k + v) + 1] = ((kk - u) * sw + kk - v) * lanes
        return h_terms, h_count, v_terms, v_count, i_terms

    @numba.njit(nogil=True)
    def to_lanes(src, b, c0, valid, channels_, height, width, lanes, scratch, s0, pix_at):
        """Channels c0.. of image b of an NCHW array into the scratch at s0 (pixel p at pix_at[p])."""
        sbase = (b * channels_ + c0) * height * width
        if valid == lanes:
            whole = (height * width) // lanes * lanes
            for p0 in range(0, whole, lanes):
                transpose(src, sbase, height * width, scratch, s0, pix_at, p0)
            for p in range(whole, height * width):
                at = s0 + pix_at[p]
                for l in range(lanes):
                    scratch[at + l] = src[sbase + l * height * width + p]
        else:
            for l in range(valid):
                for p in range(height * width):
                    scratch[s0 + pix_at[p] + l] = src[sbase + l * height * width + p]

    @numba.njit(parallel=True, fastmath={"reassoc", "contract"})
    def backward(x, g_h, g_v, g_i, kh_f, kv_f, ki_f, nk, k, big, lanes, grad_x, gkh, gkv, gki):
        """x and the branch gradients: (B, C, H, W) contiguous; the merged kernels from
        ``merge``; grad_x: (B, H, W, Cpad); gkh / gkv / gki: (B, merged kernel size) per-image
        sums of the merged kernels' gradients, zero on entry (layouts as ``merge``'s)."""
        batch, channels_, height, width = x.shape
        kk = k // 2
        half = big // 2
        ncols = nk * k
        nblocks = (channels_ + lanes - 1) // lanes
        cpad = nblocks * lanes
        dtype = kh_f.dtype
        sw = width + 2 * kk
        sh = height + 2 * kk
        pad = ncols + kk  # x's margin: every tap of every pixel lands inside it
        swx = width + 2 * pad
        shx = height + 2 * pad
        h_terms, h_count, v_terms, v_count, i_terms = adjoint_tables(height, width, nk, k, big, lanes)
        row_starts, row_sizes = cover(height, False)
        col_starts, col_sizes = cover(width, False)
        tap_starts, tap_sizes = cover(ncols, False)
        k_starts, k_sizes = cover(k, False)
        threads = numba.get_num_threads()
        plane = sh * sw * lanes
        plane_x = shx * swx * lanes
        scratch = aligned(threads * 3 * plane, dtype)
        xscratch = aligned(threads * plane_x, dtype)
        pix_at = np.empty(height * width, np.int64)
        pix_x = np.empty(height * width, np.int64)
        pixels = np.empty(2 * height * width, np.int64)  # (g offset, x offset) of every pixel
        for i in range(height):
            for xo in range(width):
                p = i * width + xo
                pix_at[p] = ((i + kk) * sw + xo + kk) * lanes
                pix_x[p] = ((i + pad) * swx + xo + pad) * lanes
                pixels[2 * p] = pix_at[p]
                pixels[2 * p + 1] = pix_x[p]
        gx_f = grad_x.reshape(-1)
        x_f, gh_f, gv_f, gi_f = x.reshape(-1), g_h.reshape(-1), g_v.reshape(-1), g_i.reshape(-1)
        nh, nv, ni = k * ncols * lanes, ncols * k * lanes, k * k * lanes
        for task in prange(batch * nblocks):
            tid = numba.get_thread_id()
            b = task // nblocks
            blk = task - b * nblocks
            c0 = blk * lanes
            valid = min(lanes, channels_ - c0)
            s_h = tid * 3 * plane
            s_v = s_h + plane
            s_i = s_v + plane
            s_x = tid * plane_x
            to_lanes(gh_f, b, c0, valid, channels_, height, width, lanes, scratch, s_h, pix_at)
            to_lanes(gv_f, b, c0, valid, channels_, height, width, lanes, scratch, s_v, pix_at)
            to_lanes(gi_f, b, c0, valid, channels_, height, width, lanes, scratch, s_i, pix_at)
            to_lanes(x_f, b, c0, valid, channels_, height, width, lanes, xscratch, s_x, pix_x)
            if valid < lanes:  # the lanes past the last channel hold an earlier block's data: zero them
                for p in range(height * width):
                    for l in range(valid, lanes):
                        scratch[s_h + pix_at[p] + l] = 0
                        scratch[s_v + pix_at[p] + l] = 0
                        scratch[s_i + pix_at[p] + l] = 0
                        xscratch[s_x + pix_x[p] + l] = 0
            # grad_x: horizontal (written), identity (added), vertical (added)
            ob = b * height * width * cpad + c0
            for xo in range(width):
                for rb in range(row_starts.size):
                    i0 = row_starts[rb]
                    rows = row_sizes[rb]
                    o = ob + (i0 * width + xo) * cpad
                    xb = ((i0 + kk) * sw + kk) * lanes
                    taps_zero(rows, kh_f, scratch, h_terms, h_count[xo], blk * nh, s_h + xb, sw * lanes, gx_f, o, width * cpad, xo * 2 * k * ncols)
                    taps_load(rows, ki_f, scratch, i_terms, k * k, blk * ni, s_i + xb + xo * lanes, sw * lanes, gx_f, o, width * cpad, 0)
            for i in range(height):
                for cb in range(col_starts.size):
                    x0 = col_starts[cb]
                    cols = col_sizes[cb]
                    o = ob + (i * width + x0) * cpad
                    xb = (kk * sw + kk + x0) * lanes
                    taps_load(cols, kv_f, scratch, v_terms, v_count[i], blk * nv, s_v + xb, lanes, gx_f, o, cpad, i * 2 * k * ncols)
            # the merged kernels' gradients: a block of consecutive taps per call, summed over every pixel
            n_pix = height * width
            for r in range(k):
                for tb in range(tap_starts.size):
                    t0 = tap_starts[tb]
                    xb = s_x + ((r - kk) * swx + t0 - half) * lanes
                    taps_zero(tap_sizes[tb], scratch, xscratch, pixels, n_pix, s_h, xb, lanes,
                              gkh[b], blk * nh + (r * ncols + t0) * lanes, lanes, 0)
            for v in range(k):
                for tb in range(tap_starts.size):
                    t0 = tap_starts[tb]
                    xb = s_x + ((t0 - half) * swx + v - kk) * lanes
                    taps_zero(tap_sizes[tb], scratch, xscratch, pixels, n_pix, s_v, xb, swx * lanes,
                              gkv[b], blk * nv + (t0 * k + v) * lanes, k * lanes, 0)
            for u in range(k):
                for vb in range(k_starts.size):
                    v0 = k_starts[vb]
                    xb = s_x + ((u - kk) * swx + v0 - kk) * lanes
                    taps_zero(k_sizes[vb], scratch, xscratch, pixels, n_pix, s_i, xb, lanes,
                              gki[b], blk * ni + (u * k + v0) * lanes, lanes, 0)

    @numba.njit(parallel=True, nogil=True)
    def unmerge(parts_h, parts_v, parts_i, kslot_h, kslot_v, ident, active, k, lanes, grad_w):
        """grad_w (C*nk, k, k) from the per-image merged kernels' gradients (``merge``'s
        layouts, summed over the images here): each small tap's gradient is the sum of the
        merged taps it was added into; pruned kernels (``active`` False) stay zero."""
        groups, channels_, nk = kslot_h.shape
        batch = parts_h.shape[0]
        kk2 = k * k
        ncols = nk * k
        for c in prange(channels_):
            blk = c // lanes
            l = c - blk * lanes
            for g in range(groups):
                for t in range(nk):
                    j = kslot_h[g, c, t]
                    if active[c, j]:
                        for u in range(k):
                            for v in range(k):
                                at = (blk * k * ncols + u * ncols + t * k + v) * lanes + l
                                for b in range(batch):
                                    grad_w[c * nk + j, u, v] += parts_h[b, at]
                    j = kslot_v[g, c, t]
                    if active[c, j]:
                        for u in range(k):
                            for v in range(k):
                                at = (blk * ncols * k + (t * k + u) * k + v) * lanes + l
                                for b in range(batch):
                                    grad_w[c * nk + j, u, v] += parts_v[b, at]
                j = ident[g, c]
                if active[c, j]:
                    for u in range(k):
                        for v in range(k):
                            at = (blk * kk2 + u * k + v) * lanes + l
                            for b in range(batch):
                                grad_w[c * nk + j, u, v] += parts_i[b, at]

    return backward, unmerge


def backward(x: torch.Tensor, weight: torch.Tensor, spec, grad_h: torch.Tensor, grad_v: torch.Tensor,
             grad_i: torch.Tensor, merged: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(grad_x, grad_weight) through the merged kernels ``merged`` (``merge``'s output for
    ``weight``); grad_x comes back with channels_last strides."""
    batch, channel_count, height, width = x.shape
    xs = x.detach().contiguous().numpy()
    lanes = channels.VECTOR_BYTES // xs.itemsize
    nblocks = -(-channel_count // lanes)
    k, ncols = spec.small_kernel, spec.nk * spec.small_kernel
    grads = [g.detach().contiguous().numpy() for g in (grad_h, grad_v, grad_i)]
    grad_x = torch.empty((batch, height, width, nblocks * lanes), dtype=x.dtype)
    sizes = (nblocks * k * ncols * lanes, nblocks * ncols * k * lanes, nblocks * k * k * lanes)
    parts = [np.zeros((batch, size), dtype=xs.dtype) for size in sizes]
    run, unmerge = compiled()
    run(xs, *grads, *merged, spec.nk, k, spec.big_kernel, lanes, grad_x.numpy(), *parts)
    grad_w = np.zeros((channel_count * spec.nk, k, k), dtype=xs.dtype)
    unmerge(*parts, *channels.slot_tables(spec), k, lanes, grad_w)
    return grad_x.permute(0, 3, 1, 2)[:, :channel_count], torch.from_numpy(grad_w).reshape(weight.shape)
