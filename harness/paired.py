"""Comparisons that hold on a noisy, shared machine: callables timed interleaved, round by round
(each round runs every callable once, in a fresh random order, so all see the same load), and
ratios estimated from the paired rounds rather than from independent medians.

A ratio b/a is exp(mean over rounds of log(t_b / t_a)) with a bootstrap interval that resamples
whole rounds: load that drifts between rounds cancels in each round's ratio, and the interval
says how far the pairing leaves it uncertain.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedRatio:
    """t_b / t_a estimated from paired rounds (> 1: a is faster), with its interval."""

    ratio: float
    low: float
    high: float
    rounds: int
    confidence: float

    def __str__(self) -> str:
        return f"{self.ratio:.3f} [{self.confidence:.0%} {self.low:.3f}, {self.high:.3f}; {self.rounds} rounds]"


def interleaved(
    calls: Mapping[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 1,
    seed: int = 0,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, np.ndarray]:
    """Seconds per call of every callable in each of ``rounds`` rounds (one call each per round,
    in a fresh random order), after ``warmup`` untimed rounds."""
    if rounds < 2:
        raise ValueError(f"interleaved timing: rounds must be >= 2 (a ratio needs paired rounds), got {rounds}")
    if not calls:
        raise ValueError("interleaved timing: no callables given")
    names = list(calls)
    order = random.Random(seed)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        order.shuffle(names)
        for name in names:
            start = timer()
            calls[name]()
            times[name].append(timer() - start)
    return {name: np.asarray(values) for name, values in times.items()}


def paired_ratio(
    a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95, resamples: int = 4000, seed: int = 0
) -> PairedRatio:
    """t_b / t_a from paired rounds (a[i] and b[i] timed in the same round)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"paired_ratio: expected two equal-length series of >= 2 rounds, got shapes {a.shape} and {b.shape}")
    if not (np.all(a > 0) and np.all(b > 0)):
        raise ValueError("paired_ratio: every time must be > 0")
    logs = np.log(b / a)
    picks = np.random.default_rng(seed).integers(0, logs.size, size=(resamples, logs.size))
    means = logs[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    return PairedRatio(
        float(np.exp(logs.mean())), float(np.exp(np.quantile(means, tail))), float(np.exp(np.quantile(means, 1 - tail))),
        logs.size, confidence,
    )  # fmt: skip
