"""Bytes an SW computation must move (compulsory traffic) and counts that traffic models of
particular implementations are built from. Shapes are the input's (B, C, H, W)."""

from __future__ import annotations

import numpy as np

from harness.spec import ShiftwiseSpec

Shape = tuple[int, int, int, int]


def compulsory_bytes(spec: ShiftwiseSpec, shape: Shape, itemsize: int) -> int:
    """Read x, the small kernels and the tables once; write the three outputs once."""
    batch, channels, height, width = shape
    pixels = batch * channels * height * width
    weights = channels * spec.nk * spec.small_kernel**2
    tables = 4 * (channels * spec.nk * 2 * spec.groups + channels * spec.groups) + channels * spec.nk
    return itemsize * (pixels + weights + 3 * pixels) + tables


def conv_output_elements(spec: ShiftwiseSpec, shape: Shape) -> int:
    """Elements of the small conv's output y: B * C*nk * (H+2e) * (W+2e)."""
    batch, channels, height, width = shape
    e = spec.extra_pad
    return batch * channels * spec.nk * (height + 2 * e) * (width + 2 * e)


def _overlap(length: int, shifts: np.ndarray, target: int) -> np.ndarray:
    """For each shift s: how many q in 0..length-1 have 0 <= q + s < target."""
    return np.clip(np.minimum(length, target - shifts) - np.maximum(0, -shifts), 0, None)


def scatter_moves(spec: ShiftwiseSpec, shape: Shape) -> int:
    """Output updates of the scatter form: each active y element added into every in-map
    output position it feeds (one per group and strip branch, plus identity picks)."""
    batch, _, height, width = shape
    e = spec.extra_pad
    hy, wy = height + 2 * e, width + 2 * e
    shifts = np.asarray(spec.shifts)
    active = spec.active[None]  # (1, C, nk), broadcast over groups
    # Horizontal: rows a with 0 <= a - e < H (H of them), columns with 0 <= q + s < W.
    horizontal = (_overlap(wy, shifts[spec.slot_h], width) * height * active).sum()
    vertical = (_overlap(hy, shifts[spec.slot_v], height) * width * active).sum()
    identity = spec.active[np.arange(spec.channels)[None, :], spec.ident].sum() * height * width
    return int(batch * (horizontal + vertical + identity))
