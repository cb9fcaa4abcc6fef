"""Per-channel move tables for gather-form kernels: which small kernels to stage and which
(staged row, shift) moves to sum, with pruned kernels and wholly off-map slots left out.

For the horizontal branch, output row i of channel c is ``sum over moves (r, s) of
Y[kernel rows[c, r]][i + e, x - s]``; a move is kept only if some x in 0..W-1 has
``0 <= x - s < W + 2e``. The vertical branch is the same along columns. Tables are int32,
padded with -1 (a -1 row or move ends the channel's list).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from harness.spec import ShiftwiseSpec


@dataclass(frozen=True)
class MoveTables:
    rows: np.ndarray  # (C, R): kernels j staged for the horizontal branch
    row_moves: np.ndarray  # (C, Mh, 2): (index into rows, shift)
    columns: np.ndarray  # (C, R'): kernels staged for the vertical branch
    column_moves: np.ndarray  # (C, Mv, 2)
    identity: np.ndarray  # (C, E): flat kernel c*nk + ident[g, c], or -1 if pruned

    @property
    def staged_rows(self) -> int:
        return int((self.rows >= 0).sum())

    @property
    def staged_columns(self) -> int:
        return int((self.columns >= 0).sum())


def _branch(slots: np.ndarray, spec: ShiftwiseSpec, extent: int, output: int) -> tuple[np.ndarray, np.ndarray]:
    shifts = np.asarray(spec.shifts)
    staged_lists, move_lists = [], []
    for c in range(spec.channels):
        moves = [
            (j, int(shifts[slots[g, c, j]]))
            for g in range(spec.groups)
            for j in range(spec.nk)
            if spec.active[c, j] and -int(shifts[slots[g, c, j]]) < extent and int(shifts[slots[g, c, j]]) <= output - 1
        ]
        staged = sorted({j for j, _ in moves})
        staged_lists.append(staged)
        move_lists.append([(staged.index(j), s) for j, s in moves])
    staged_table = np.full((spec.channels, max(1, max(map(len, staged_lists)))), -1, dtype=np.int32)
    move_table = np.full((spec.channels, max(1, max(map(len, move_lists))), 2), -1, dtype=np.int32)
    for c in range(spec.channels):
        staged_table[c, : len(staged_lists[c])] = staged_lists[c]
        if move_lists[c]:
            move_table[c, : len(move_lists[c])] = move_lists[c]
    return staged_table, move_table


@functools.lru_cache(maxsize=128)
def move_tables(spec: ShiftwiseSpec, height: int, width: int) -> MoveTables:
    """The tables for an H x W map (cached: specs are immutable and hashable)."""
    e = spec.extra_pad
    rows, row_moves = _branch(spec.slot_h, spec, width + 2 * e, width)
    columns, column_moves = _branch(spec.slot_v, spec, height + 2 * e, height)
    channel = np.arange(spec.channels)[None, :]
    identity = np.where(spec.active[channel, spec.ident], channel * spec.nk + spec.ident, -1).T
    return MoveTables(rows, row_moves, columns, column_moves, np.ascontiguousarray(identity, dtype=np.int32))
