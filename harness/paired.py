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


class Rounds:
    """Interleaved rounds run one at a time: each ``run()`` calls every callable once, in a fresh
    random order (seeded), and records the seconds of each call. A benchmark whose timed call is
    one round (``harness.models.compare``) times it with pytest-benchmark; ``interleaved`` runs
    many."""

    def __init__(self, calls: Mapping[str, Callable[[], object]], *, seed: int = 0,
                 timer: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        if not calls:
            raise ValueError("interleaved timing: no callables given")
        self._calls = dict(calls)
        self._order = list(self._calls)
        self._random = random.Random(seed)
        self._timer = timer
        self._times: dict[str, list[float]] = {name: [] for name in self._calls}

    @property
    def count(self) -> int:
        """Rounds run so far."""
        return len(next(iter(self._times.values())))

    def run(self) -> dict[str, object]:
        """One round: every callable once, in a fresh random order; their results by name, in
        the order the callables were given (not the order they ran in)."""
        self._random.shuffle(self._order)
        results = {}
        for name in self._order:
            start = self._timer()
            results[name] = self._calls[name]()
            self._times[name].append(self._timer() - start)
        return {name: results[name] for name in self._calls}

    def times(self, last: int | None = None) -> dict[str, np.ndarray]:
        """Seconds per call of every callable in each round run, or in the ``last`` rounds."""
        if last is not None and not 0 < last <= self.count:
            raise ValueError(f"interleaved timing: asked for the last {last} rounds of {self.count}")
        start = 0 if last is None else self.count - last
        return {name: np.asarray(values[start:]) for name, values in self._times.items()}


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
    series = Rounds(calls, seed=seed, timer=timer)
    for _ in range(warmup + rounds):
        series.run()
    return series.times(last=rounds)


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
