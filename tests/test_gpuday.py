"""The GPU day's driver and its GPU-free pieces: budgets, isolation of phases, what comes back,
the event clock, the ncu CSV reader. The whole dry run is CI's (``.ci/run``: make gpu --dry-run)."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

from harness import gputime
from harness.gpuday import day
from harness.gpuday.phases import _parse_ncu_csv, gpu_implementations


def test_the_default_day_fits_the_lease_and_the_dry_run_five_minutes():
    assert sum(phase.budget_s for phase in day.PHASES) <= 8 * 60
    assert sum(phase.dry_budget_s for phase in day.PHASES) <= 5 * 60
    assert [phase.name for phase in day.PHASES] == ["env", "correctness", "sanitizers", "timing", "peers", "counters", "networks", "report"]


def test_a_phase_out_of_time_is_recorded_and_the_next_still_runs(tmp_path, monkeypatch):
    starved = [dataclasses.replace(p, dry_budget_s=day.GRACE_S + 1) if p.name == "env" else p for p in day.PHASES]
    monkeypatch.setattr(day, "PHASES", tuple(starved))
    output = tmp_path / "out"
    status = day.run_day(output, dry_run=True, phases=["env", "report"], echo=lambda line: None)
    summary = json.loads((output / day.SUMMARY).read_text())
    statuses = {record["name"]: record["status"] for record in summary["phases"]}
    # env had 1 s before its SIGINT; report found no benchmark run: each recorded, the day failed
    assert statuses == {"env": day.TIMED_OUT, "report": day.FAILED} and status == 1
    files = [path for path in output.rglob("*") if path.is_file()]
    assert len(files) <= day.MAX_FILES and {p.name for p in files} == {"gpu-day.json", "gpu-day.log", "gpu-day.md"}
    assert "===== phase env" in (output / day.LOG).read_text()


def test_the_day_refuses_a_folder_with_earlier_results(tmp_path):
    (tmp_path / "gpu-day.json").write_text("{}")
    with pytest.raises(FileExistsError, match="is not empty"):
        day.run_day(tmp_path, dry_run=True, echo=lambda line: None)
    with pytest.raises(ValueError, match="unknown phase"):
        day.run_day(tmp_path / "new", dry_run=True, phases=["warp"], echo=lambda line: None)


def test_phases_cover_what_declares_cuda():
    from harness.registry import implementations

    assert {impl.name for impl in gpu_implementations()} == {n for n, i in implementations().items() if "cuda" in i.devices}


class FakeEvent:
    """torch.cuda.Event's timing surface, on a fake clock the test advances."""

    now = 0.0

    def __init__(self, enable_timing=False):
        self.at = None

    def record(self):
        self.at = FakeEvent.now

    def synchronize(self):
        pass

    def elapsed_time(self, end):  # milliseconds, as CUDA's
        return (end.at - self.at) * 1e3


def test_event_clock_reads_the_gpu_time_of_each_marked_round(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    clock = gputime.EventClock()

    def work():
        FakeEvent.now += 0.004  # 4 ms of "GPU" work between the events
        return "done"

    marked = clock.timed(work)
    before = clock()
    FakeEvent.now += 1.0  # host time outside the events (setup, the L2 flush) is not counted
    assert marked() == "done"
    assert clock() - before == pytest.approx(0.004)
    assert gputime.rounds_for(0.004, 1.0, 5) == 250 and gputime.rounds_for(1.0, 1.0, 5) == 5
    assert gputime.rounds_for(1e-9, 10.0, 5) == gputime.MAX_ROUNDS


def test_ncu_raw_csv_rows_keep_the_metrics():
    text = "\n".join([
        "==PROF== Connected to process 1",
        '"ID","Kernel Name","Block Size","dram__bytes_read.sum","sm__warps_active.avg.pct_of_peak_sustained_active","other"',
        '"","","","byte","%",""',
        '"0","sw_onepass_f32","(512, 1, 1)","1048576","41.5","x"',
    ])  # fmt: skip
    assert _parse_ncu_csv(text) == [{"Kernel Name": "sw_onepass_f32", "Block Size": "(512, 1, 1)", "dram__bytes_read.sum": "1048576",
                                     "sm__warps_active.avg.pct_of_peak_sustained_active": "41.5"}]  # fmt: skip


class FakeBenchmark:
    """pytest-benchmark's pedantic loop as it uses the fixture's timer: read before and after
    the target, setup outside (``BenchmarkFixture._raw_pedantic``)."""

    def __init__(self, max_time: float, min_rounds: int):
        self._max_time, self._min_rounds, self._timer = max_time, min_rounds, None
        self.durations, self.extra_info = [], {}

    def pedantic(self, target, setup=None, rounds=1, iterations=1, warmup_rounds=0):
        for index in range(warmup_rounds + rounds):
            if setup:
                assert setup() is None  # pedantic would take a returned value as the target's arguments
            start = self._timer()
            result = target()
            if index >= warmup_rounds:
                self.durations.append(self._timer() - start)
        return result


def test_time_on_gpu_times_only_the_work_and_sizes_rounds_from_max_time(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(FakeEvent, "now", 0.0)  # binary fractions below: the clock's sums are exact
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    def flusher(device):
        def flush():
            FakeEvent.now += 0.5  # overwriting the L2 takes time the events must not see

        return flush

    monkeypatch.setattr(gputime, "_flusher", flusher)
    calls = []

    def work():
        FakeEvent.now += 2**-9  # about 2 ms
        calls.append(1)
        return len(calls)

    benchmark = FakeBenchmark(max_time=0.125, min_rounds=5)
    host_clock = benchmark._timer = time.perf_counter
    last = gputime.time_on_gpu(benchmark, work, "cpu", gputime.GpuTiming(l2_flush=True, graph=True))
    assert benchmark._timer is host_clock  # put back after the timing (the integrity check reads it)
    assert len(benchmark.durations) == gputime.rounds_for(2**-9, 0.125, 5) == 64
    assert benchmark.durations == [2**-9] * 64
    facts = benchmark.extra_info["gpu_timing"]
    assert facts["timer"].startswith("CUDA events") and facts["l2_flush"] and facts["rounds"] == 64
    assert facts["graph"].startswith("not capturable") and facts["graph_median_s"] is None  # no CUDA graphs on the CPU
    assert facts["host_seconds_per_call"] >= 0 and last == 3 + 1 + 64  # probe, warm-up, timed rounds
