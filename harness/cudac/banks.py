"""Shared-memory bank conflicts from a kernel's own index expressions, replayed for the lanes of
each warp (no GPU): what a kernel's ``shared_sites`` build its estimate from.

The rule (sm_80, sm_90): shared memory has 32 banks of 4-byte words; a warp-wide access is
served in wavefronts of at most one word per bank, and lanes reading the same word share it
(broadcast). A 32-bit access therefore takes as many wavefronts as the most distinct words any
one bank is asked for; an 8-byte (16-byte) access is split into 2 (4) phases of 16 (8)
consecutive lanes, each phase counted the same way. Inactive lanes (address -1) ask nothing;
a request with no active lane is not issued.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BANKS, WORD = 32, 4


def wavefronts(addresses, width: int = 4) -> np.ndarray:
    """Wavefronts of each warp request: ``addresses`` is (requests, 32) byte addresses, -1 for
    an inactive lane; ``width`` the bytes each lane accesses (4, 8 or 16, aligned)."""
    address = np.atleast_2d(np.asarray(addresses, dtype=np.int64))
    if address.shape[-1] != 32:
        raise ValueError(f"a warp request has 32 lanes, got {address.shape[-1]}")
    if width not in (4, 8, 16):
        raise ValueError(f"a shared-memory access is 4, 8 or 16 bytes wide, got {width}")
    active = address >= 0
    if (address[active] % width).any():
        raise ValueError(f"{width}-byte accesses must be {width}-byte aligned")
    words_per_lane = width // WORD
    phases = words_per_lane
    lanes_per_phase = 32 // phases
    # (requests, phases, lanes of a phase, words of a lane): the word index each lane touches.
    first = np.where(active, address // WORD, -1)
    words = first[..., None] + np.arange(words_per_lane)
    words = np.where(active[..., None], words, -1).reshape(len(address), phases, lanes_per_phase * words_per_lane)
    total = np.zeros(len(address), dtype=np.int64)
    for phase in range(phases):
        w = np.sort(words[:, phase, :], axis=1)
        distinct = (w >= 0) & np.concatenate([np.ones((len(w), 1), bool), w[:, 1:] != w[:, :-1]], axis=1)
        rows = np.repeat(np.arange(len(w)), w.shape[1])[distinct.ravel()]
        banks = (w.ravel()[distinct.ravel()] % BANKS).astype(np.int64)
        per_bank = np.bincount(rows * BANKS + banks, minlength=len(w) * BANKS).reshape(len(w), BANKS)
        total += per_bank.max(axis=1)
    return total


@dataclass(frozen=True)
class SharedSite:
    """One shared-memory access site of a kernel, over a whole launch: warp-level requests, the
    wavefronts they take (bank conflicts included) and those they would take without conflicts
    (one per request per phase)."""

    name: str
    op: str  # "ld" or "st"
    width: int
    requests: float
    wavefronts: float

    @property
    def ideal(self) -> float:
        return self.requests * (self.width // WORD)

    @property
    def conflicts(self) -> float:
        """Wavefronts beyond the conflict-free ones (what ncu's ``l1tex__data_bank_conflicts_*`` count)."""
        return self.wavefronts - self.ideal

    @property
    def ways(self) -> float:
        """Wavefronts per conflict-free wavefront: 1 without conflicts, 32 when all lanes hit one bank."""
        return self.wavefronts / self.ideal if self.ideal else 1.0


def site(name: str, op: str, addresses, times=1.0, width: int = 4) -> SharedSite:
    """A site from the byte addresses of its warp requests ((requests, 32), -1 inactive), each
    request executed ``times`` times (a scalar or one weight per request) over the launch."""
    if op not in ("ld", "st"):
        raise ValueError(f"op is 'ld' or 'st', got {op!r}")
    address = np.atleast_2d(np.asarray(addresses, dtype=np.int64))
    issued = (address >= 0).any(axis=1)
    weight = np.broadcast_to(np.asarray(times, dtype=float), (len(address),)) * issued
    return SharedSite(name, op, width, float(weight.sum()), float((wavefronts(address, width) * weight).sum()))


def merge(sites) -> list[SharedSite]:
    """Sites of the same (name, op, width) summed (e.g. the same access over several shifts)."""
    merged: dict[tuple, list[float]] = {}
    for s in sites:
        entry = merged.setdefault((s.name, s.op, s.width), [0.0, 0.0])
        entry[0] += s.requests
        entry[1] += s.wavefronts
    return [SharedSite(name, op, width, requests, waves) for (name, op, width), (requests, waves) in merged.items()]


def warps_of(threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(tid, valid) as (warps, 32) arrays for a block of ``threads`` threads (the last warp may be partial)."""
    warps = -(-threads // 32)
    tid = np.arange(warps * 32).reshape(warps, 32)
    return tid, tid < threads


def strided(tid: np.ndarray, valid: np.ndarray, total: int, threads: int):
    """The iterations of ``for (t = tid; t < total; t += threads)`` in lockstep: (t, active)
    arrays of shape (iterations, warps, 32)."""
    iterations = max(0, -(-total // threads))
    t = tid[None] + threads * np.arange(iterations)[:, None, None]
    return t, valid[None] & (t < total)
