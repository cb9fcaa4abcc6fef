"""GPU timing for the benchmarks: CUDA events around the work instead of a host sync per call.

``time_on_gpu(benchmark, work, device, options)`` times ``work`` (which launches and returns
without synchronizing) through pytest-benchmark's ``pedantic``, with an ``EventClock`` as the
benchmark's timer: each round records a start and an end event on torch's current stream
around the work, and the clock reads their elapsed time (so the statistics pytest-benchmark
stores are GPU time, not host time). With ``l2_flush`` a buffer larger than any L2 is
overwritten in the round's setup, outside the timed region (the flush is enqueued before the
start event). The number of rounds follows ``--benchmark-max-time`` / ``--benchmark-min-rounds``
(measured per case, never a fixed 20). With ``graph`` the work is also captured once in a CUDA
graph and its replays timed the same way. The host time of one call (launch overhead: what a
small layer's time would otherwise measure) is stated separately. All three go to the
benchmark's ``extra_info["gpu_timing"]``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Bytes overwritten before each round with the L2 flush: larger than any GPU's L2 so far (H200: 60 MB).
L2_FLUSH_BYTES = 256 * 2**20
#: Most rounds of one case (a fast kernel under a long --benchmark-max-time).
MAX_ROUNDS = 2000


@dataclass(frozen=True)
class GpuTiming:
    """How the benchmarks time on a GPU (``--l2-flush``, ``--gpu-graph``)."""

    l2_flush: bool = False
    graph: bool = False


class EventClock:
    """A pytest-benchmark timer whose reading advances by the GPU time between ``mark``'s
    events: reading it after a marked round waits for that round's end event only."""

    __name__ = "cuda_events"  # how pytest-benchmark names the timer in its JSON

    def __init__(self) -> None:
        self.total = 0.0
        self._pending: tuple[torch.cuda.Event, torch.cuda.Event] | None = None

    def timed(self, work: Callable[[], object]) -> Callable[[], object]:
        def marked() -> object:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = work()
            end.record()
            self._pending = (start, end)
            return result

        return marked

    def __call__(self) -> float:
        if self._pending is not None:
            start, end = self._pending
            end.synchronize()
            self.total += start.elapsed_time(end) / 1e3
            self._pending = None
        return self.total


def _flusher(device: torch.device) -> Callable[[], None] | None:
    scratch = torch.empty(L2_FLUSH_BYTES // 4, device=device)
    def flush() -> None:  # enqueued on the stream before the round's start event: not timed
        scratch.fill_(1.0)

    return flush


def _event_seconds(work: Callable[[], object], flush: Callable[[], None] | None, rounds: int) -> list[float]:
    clock = EventClock()
    marked = clock.timed(work)
    seconds = []
    for _ in range(rounds):
        if flush:
            flush()
        before = clock()
        marked()
        seconds.append(clock() - before)
    return seconds


def rounds_for(seconds_per_round: float, max_time: float, min_rounds: int) -> int:
    """Rounds that fill ``max_time`` (at least ``min_rounds``, at most ``MAX_ROUNDS``)."""
    wanted = math.ceil(max_time / max(seconds_per_round, 1e-7))
    return max(min_rounds, min(MAX_ROUNDS, wanted))


def host_seconds_per_call(work: Callable[[], object], device: torch.device, calls: int = 20) -> float:
    """Median host time of one call (launch path: argument packing, caches, the driver call),
    the GPU left to run behind it; synchronized once at the end."""
    spent = []
    for _ in range(calls):
        start = time.perf_counter()
        work()
        spent.append(time.perf_counter() - start)
    torch.cuda.synchronize(device)
    return statistics.median(spent)


def _graph_seconds(work: Callable[[], object], device: torch.device, flush, rounds: int) -> tuple[list[float], str]:
    """Replays of ``work`` captured once in a CUDA graph, each timed by events; or ([], why not)."""
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up on a side stream, as capture requires
                work()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            work()
    except Exception as error:  # a launch path that cannot be captured is a finding, recorded
        if torch.cuda.is_available():
            torch.cuda.synchronize(device)
        return [], f"not capturable: {type(error).__name__}: {error}"
    return _event_seconds(graph.replay, flush, rounds), "captured once, replayed"


def time_on_gpu(benchmark, work: Callable[[], object], device: str | torch.device, options: GpuTiming) -> object:
    """Time ``work`` on ``device`` with events through ``benchmark.pedantic``; returns the last
    round's result (for the determinism check). ``work`` must not synchronize."""
    device = torch.device(device)
    flush = _flusher(device) if options.l2_flush else None
    probe = statistics.median(_event_seconds(work, flush, 3))
    rounds = rounds_for(probe, getattr(benchmark, "_max_time", 1.0), getattr(benchmark, "_min_rounds", 5))
    clock = EventClock()
    host_clock = getattr(benchmark, "_timer", None)
    benchmark._timer = clock  # pytest-benchmark reads its timer per round: the event clock instead of the host clock
    try:
        result = benchmark.pedantic(clock.timed(work), setup=flush, rounds=rounds, iterations=1, warmup_rounds=1)
    finally:
        if benchmark._timer is clock:  # put the host clock back; anything else found there stays for the integrity check to see
            benchmark._timer = host_clock
    facts = {"timer": "CUDA events on torch's current stream", "rounds": rounds, "l2_flush": bool(flush),
             "host_seconds_per_call": host_seconds_per_call(work, device)}  # fmt: skip
    if options.graph:
        replays, how = _graph_seconds(work, device, flush, rounds)
        facts.update(graph=how, graph_median_s=statistics.median(replays) if replays else None)
    benchmark.extra_info["gpu_timing"] = facts
    return result
