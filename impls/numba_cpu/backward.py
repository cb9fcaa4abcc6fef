"""numba_cpu's backward: the SW operator's gradients with respect to x and to the small kernels,
given the three branch gradients, in the SW form (the adjoint of the planes form's gather).

The forward gathers, for every output pixel, the moves (kernel j, shift s) of each branch from
the small conv's output y. Its adjoint is a gather with the moves reversed: the gradient of
y_j at (a, q) pulls every branch gradient that y_j[a, q] was added into,

    gy_j[a, q] = sum over horizontal moves (j, s) of  g_h[a - e, q + s]
               + sum over vertical moves (j, s)   of  g_v[a + s, q - e]
               + (identity picks of j)            *   g_i[a - e, q - e]   (added once per pick)

(terms off the map are zero). Then the small conv's two gradients, per (b, c) plane and kernel:

    grad_x[b, c, i, x] += sum_{u, v} w_j[u, v] * gy_j[i + p - u, x + p - v]     (full correlation)
    grad_w_j[u, v]     += sum_{a, q} gy_j[a, q] * xpad[a + u, q + v]            (xpad: x, p zeros around)

One task per (b, c) plane (``prange``), fused: gy_j lives in a per-thread scratch plane that
stays in L1/L2, is built once and read by both gradients, and is never written to memory.
Only the kernels some in-map move or identity pick reads are visited (``harness.move_tables``
owns that predicate): pruned kernels and wholly off-map slots cost nothing, their weights are
never read (so NaN there cannot reach grad_x), and their weight gradient is zero. The weight
gradient is summed per image into a (B, C, nk, k*k) buffer and reduced over B at the end, so
no two threads write one place and the result does not depend on the thread count.

Inner loops run along rows with the small kernel size compiled in (one build per k), so LLVM
unrolls the k x k taps and vectorises the rows (``fastmath`` reassoc/contract only: the
reference's order-independent gamma_n bound covers reassociation and FMA; NaN and inf kept).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from harness import ShiftwiseSpec, move_tables

_FASTMATH = {"reassoc", "contract"}


@dataclass(frozen=True)
class BackwardTables:
    """Per channel, the kernels the backward visits and their moves, int32.

    ``kernels[c, r]`` (``n_kernels[c]`` of them) is a kernel j some move reads; ``h_moves[c, m]``
    and ``v_moves[c, m]`` are (r, shift) pairs (``n_h[c]``, ``n_v[c]``), ``i_moves[c, m]`` the r
    of an identity pick (``n_i[c]``)."""

    kernels: np.ndarray
    n_kernels: np.ndarray
    h_moves: np.ndarray
    n_h: np.ndarray
    v_moves: np.ndarray
    n_v: np.ndarray
    i_moves: np.ndarray
    n_i: np.ndarray

    def arrays(self) -> tuple:
        return (self.kernels, self.n_kernels, self.h_moves, self.n_h, self.v_moves, self.n_v, self.i_moves, self.n_i)


@functools.lru_cache(maxsize=64)
def backward_tables(spec: ShiftwiseSpec, height: int, width: int) -> BackwardTables:
    """The tables for an H x W map, regrouped from ``harness.move_tables`` (cached)."""
    moves = move_tables(spec, height, width)
    channels, nk = spec.channels, spec.nk
    h_lists = [[(int(moves.rows[c, r]), int(s)) for r, s in moves.row_moves[c] if r >= 0] for c in range(channels)]
    v_lists = [[(int(moves.columns[c, r]), int(s)) for r, s in moves.column_moves[c] if r >= 0] for c in range(channels)]
    i_lists = [[int(flat) - c * nk for flat in moves.identity[c] if flat >= 0] for c in range(channels)]
    kernel_lists = [sorted({j for j, _ in h + v} | set(i)) for h, v, i in zip(h_lists, v_lists, i_lists)]

    def table(lists, width_: int):
        out = np.zeros((channels, max(1, max(map(len, lists))), width_), dtype=np.int32)
        return out, np.array([len(lst) for lst in lists], dtype=np.int32)

    kernels, n_kernels = table(kernel_lists, 1)
    h_moves, n_h = table(h_lists, 2)
    v_moves, n_v = table(v_lists, 2)
    i_moves, n_i = table(i_lists, 1)
    for c in range(channels):
        index = {j: r for r, j in enumerate(kernel_lists[c])}
        kernels[c, : len(kernel_lists[c]), 0] = kernel_lists[c]
        for m, (j, s) in enumerate(h_lists[c]):
            h_moves[c, m] = (index[j], s)
        for m, (j, s) in enumerate(v_lists[c]):
            v_moves[c, m] = (index[j], s)
        for m, j in enumerate(i_lists[c]):
            i_moves[c, m, 0] = index[j]
    return BackwardTables(kernels[:, :, 0].copy(), n_kernels, h_moves, n_h, v_moves, n_v, i_moves[:, :, 0].copy(), n_i)


@functools.lru_cache(maxsize=None)
def _compiled(k: int, dtype: str):
    """The backward for small kernel size ``k`` and element type ``dtype`` (compile-time
    constants: sums accumulate in ``dtype``).

    Every scratch plane has one row stride ``S = W + 2p``, so the small conv's two gradients
    and the vertical and identity moves are each one long contiguous loop over whole planes
    (``n`` over rows*S; the few columns past a row's end compute values that are never used,
    or are zeros): short rows (7 to 58 wide) would otherwise run in LLVM's scalar remainder
    loop. Only the horizontal moves are clipped row by row. Indices are ``start + n`` with
    ``start`` provably >= 0 (a ``max(0, .)``) and ``n`` a loop counter, so LLVM drops Numba's
    negative-index wraparound and emits plain vector loads and FMAs."""
    import numba
    from numba import prange

    p = k - 1
    e = k // 2
    zero = np.dtype(dtype).type(0)

    namespace = {"numba": numba, "prange": prange, "np": np, "p": p, "e": e, "k": k, "zero": zero}
    source = _SOURCE.replace("GRAD_X\n", _grad_x_source(k)).replace("GRAD_W\n", _grad_w_source(k))
    exec(source, namespace)  # noqa: S102 - fixed source, the k x k taps written out
    return numba.njit(parallel=True, fastmath=_FASTMATH, nogil=True)(namespace["backward"])

def _grad_x_source(k: int) -> str:
    """grad_x's k*k taps as one loop over the plane: one load and store of grad_x per k*k
    FMAs (the weights and offsets are loop-invariant scalars)."""
    taps = [(u, v) for u in range(k) for v in range(k)]
    pad = " " * 12
    lines = [f"{pad}w{u}{v} = w[c, j, {u * k + v}]\n{pad}o{u}{v} = max(0, {k - 1 - u} * stride + {k - 1 - v + k // 2})" for u, v in taps]
    lines.append(f"{pad}for n in range(plane_g):")
    lines.append(f"{pad}    acc = gbuf[t, n]")
    lines += [f"{pad}    acc += w{u}{v} * ybuf[t, o{u}{v} + n]" for u, v in taps]
    lines.append(f"{pad}    gbuf[t, n] = acc")
    return "\n".join(lines) + "\n"


def _grad_w_source(k: int) -> str:
    """The k x k weight gradients as one loop over the plane with k*k accumulators (one load
    of gy per k*k FMAs)."""
    taps = [(u, v) for u in range(k) for v in range(k)]
    pad = " " * 12
    lines = [f"{pad}s{u}{v} = zero\n{pad}x{u}{v} = max(0, {u} * stride + {v})" for u, v in taps]
    lines.append(f"{pad}for n in range(plane_y - e):")
    lines.append(f"{pad}    gy = ybuf[t, e + n]")
    lines += [f"{pad}    s{u}{v} += gy * xbuf[t, x{u}{v} + n]" for u, v in taps]
    lines += [f"{pad}grad_w[b, c, j, {u * k + v}] = s{u}{v}" for u, v in taps]
    return "\n".join(lines) + "\n"


#: The backward's source; GRAD_X and GRAD_W are replaced by the taps written out for one k.
_SOURCE = '''
def backward(x, w, g_h, g_v, g_i, kernels, n_kernels, h_moves, n_h, v_moves, n_v, i_moves, n_i,
             xbuf, ybuf, hbuf, vbuf, ibuf, gbuf, grad_x, grad_w):  # fmt: skip
    """x, the branch gradients and grad_x are (B, C, H, W); w is (C, nk, k*k); grad_w is
    (B, C, nk, k*k), zero on entry; the scratch planes are (threads, rows * S), zeroed.

    Layout, stride S: x[i, q] at xbuf[(p + i)*S + p + q] (p zero rows and columns around);
    y_j's gradient gy[a, q] (a < H+2e, q < W+2e) at ybuf[a*S + e + q]; each branch
    gradient g[i, q] at its buffer's [i*S + 2e + q]; grad_x[i, q] at gbuf[i*S + q]."""
    batch, channels, height, width = x.shape
    hy, wy = height + 2 * e, width + 2 * e
    stride = width + 2 * p
    plane_y = hy * stride
    plane_g = height * stride
    for task in prange(batch * channels):
        t = numba.get_thread_id()
        b = task // channels
        c = task - b * channels
        # Data in place; the margins were zeroed once and are never written.
        for i in range(height):
            xrow = max(0, (p + i) * stride + p)
            grow = max(0, i * stride + 2 * e)
            for m in range(width):
                xbuf[t, xrow + m] = x[b, c, i, m]
                hbuf[t, grow + m] = g_h[b, c, i, m]
                vbuf[t, grow + m] = g_v[b, c, i, m]
                ibuf[t, grow + m] = g_i[b, c, i, m]
        for n in range(plane_g):
            gbuf[t, n] = zero
        for r in range(n_kernels[c]):
            j = kernels[c, r]
            for n in range(plane_y):
                ybuf[t, n] = zero
            # The adjoint gather: every move of kernel j, reversed, clipped to the map.
            for mv in range(n_h[c]):
                if h_moves[c, mv, 0] == r:
                    s = h_moves[c, mv, 1]
                    q0, qs = max(0, -s), max(0, s)
                    count = min(wy - q0, width - qs)
                    for i in range(height):
                        dst = max(0, (i + e) * stride + e + q0)
                        src = max(0, i * stride + 2 * e + qs)
                        for m in range(count):
                            ybuf[t, dst + m] += hbuf[t, src + m]
            for mv in range(n_v[c]):
                if v_moves[c, mv, 0] == r:
                    # gy[a, e + q] += g_v[a + s, q]: whole rows, a in [a0, a1).
                    s = v_moves[c, mv, 1]
                    a0, a1 = max(0, -s), min(hy, height - s)
                    dst = max(0, a0 * stride)
                    src = max(0, (a0 + s) * stride)
                    for n in range(max(0, a1 - a0) * stride):
                        ybuf[t, dst + n] += vbuf[t, src + n]
            for mv in range(n_i[c]):
                if i_moves[c, mv] == r:
                    # gy[i + e, e + q] += g_i[i, q]
                    dst = max(0, e * stride)
                    for n in range(plane_g):
                        ybuf[t, dst + n] += ibuf[t, n]
            # grad_x[i, q] += sum_{u,v} w[u, v] * gy[i + p - u, q + p - v]   (GRAD_X below)
            # grad_w[u, v] = sum gy[a, q] * xpad[a + u, q + v]; gy's zero margins pair
            # with the columns that are not its own.                            (GRAD_W)
GRAD_X
GRAD_W
        for i in range(height):
            row = max(0, i * stride)
            for m in range(width):
                grad_x[b, c, i, m] = gbuf[t, row + m]

'''


def backward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, grad_h: torch.Tensor,
             grad_v: torch.Tensor, grad_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(grad_x, grad_weight) of the SW operator at (x, weight) for the branch gradients."""
    import numba

    batch, channels, height, width = x.shape
    k = spec.small_kernel
    tables = backward_tables(spec, height, width)
    xs = x.detach().contiguous().numpy()
    w = weight.detach().contiguous().reshape(channels, spec.nk, k * k).numpy()
    grads = [g.detach().contiguous().numpy() for g in (grad_h, grad_v, grad_i)]
    threads = numba.get_num_threads()
    dtype = xs.dtype
    p, e = spec.padding, spec.extra_pad
    stride = width + 2 * p
    # One spare row each: the whole-plane loops read up to p + e elements past a plane's end.
    sizes = {"x": (height + 2 * p + 1) * stride, "y": (height + 2 * e + 1) * stride, "g": (height + 1) * stride}
    xbuf, ybuf = np.zeros((threads, sizes["x"]), dtype=dtype), np.zeros((threads, sizes["y"]), dtype=dtype)
    hbuf, vbuf, ibuf, gbuf = (np.zeros((threads, sizes["g"]), dtype=dtype) for _ in range(4))
    grad_x = torch.empty(x.shape, dtype=x.dtype)
    per_image = np.zeros((batch, channels, spec.nk, k * k), dtype=dtype)
    _compiled(k, dtype.str)(xs, w, *grads, *tables.arrays(), xbuf, ybuf, hbuf, vbuf, ibuf, gbuf, grad_x.numpy(), per_image)
    grad_w = torch.from_numpy(per_image.sum(axis=0)).reshape(weight.shape)
    return grad_x, grad_w
