"""Table 7's comparisons timed interleaved (harness.models.compare): the items of each tier, the
row from known per-round series (the networks' preparation and clock faked: nothing is timed
here), a failing network left out with the blame on it, and the report's paired ratios."""

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import paired
from harness.bench import Prepared, Selection, Session
from harness.cases import ModelCase
from harness.models import bench, compare
from harness.models.bench import ModelMismatch, ModelRun
from harness.models.layers import resolve_impl
from harness.models.table7 import PAPER_A100, paired_section
from harness.report import render_report
from harness.results import ComparisonRow, Failure, ResultFormatError, RunRecord, row_from_extra_info

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 6
#: The fake networks' seconds per call, call by call: the comparison's own verification call
#: (0), the session's warm-up round (1), then the timed rounds (2 ...). The load drifts over
#: rounds (x1 .. x8) and the per-round ratios are exact binary fractions.
LOAD = np.array([9.0, 7.0, 1.0, 2.0, 4.0, 8.0, 4.0, 2.0])
SERIES = {
    "sw_tiny[numba_cpu]": 0.125 * LOAD,
    "sw_tiny_rep": 0.25 * LOAD,  # SW / SW Rep = 2 in every round
    "unireplknet_tiny": 0.0625 * LOAD * np.array([1, 1, 1, 2, 1, 2, 1, 2]),  # per round 0.5 or 1
    "slak_tiny": 0.1875 * LOAD,  # 1.5
}


def case(network: str, **values) -> ModelCase:
    return ModelCase(f"{network}-b1", network, 1, **values)


def item(**sw_values) -> compare.ComparisonItem:
    sw = ModelRun(case("sw_tiny", compare_rounds=ROUNDS, **sw_values), "cpu", "numba_cpu")
    return compare.ComparisonItem(sw, tuple(ModelRun(case(n), "cpu", None) for n in ("sw_tiny_rep", "unireplknet_tiny", "slak_tiny")))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeBenchmark:
    """pytest-benchmark's pedantic mode as Session.measure uses it. No ``_timer``: a clock-patching
    known-bad implementation loaded earlier in the same worker (tests/bad_impls) may have replaced
    ``time.perf_counter``, and this fake would carry the replacement into the timer check."""

    def __init__(self):
        self.extra_info, self.group, self.has_error, self.calls = {}, None, False, 0

    def pedantic(self, target, rounds, iterations, warmup_rounds):
        assert iterations == 1 and warmup_rounds == 0
        for _ in range(rounds):
            result = target()
            self.calls += 1
        return result


def fake_networks(monkeypatch, clock: FakeClock, broken: dict[str, str] | None = None, wrong: str | None = None):
    """``bench.prepare`` replaced by networks whose calls take SERIES's seconds on ``clock``;
    ``broken``: network -> its preparation's error; ``wrong``: a network whose logits fail its check."""
    calls = {name: 0 for name in SERIES}

    def prepare(run: ModelRun, dtype: torch.dtype) -> Prepared:
        if broken and run.computation in broken:
            raise ModelMismatch(broken[run.computation])

        def call() -> torch.Tensor:
            clock.now += SERIES[run.computation][calls[run.computation]]
            calls[run.computation] += 1
            return torch.full((1, 1000), float(len(run.computation)))

        def verify(logits: torch.Tensor) -> str:
            if run.computation == wrong:
                raise ModelMismatch(f"{run.computation}: logits differ from the reference path's")
            assert torch.equal(logits, torch.full((1, 1000), float(len(run.computation))))
            return f"{run.computation} checked"

        return Prepared(call, verify, lambda verified: None, rounds=run.case.rounds)

    monkeypatch.setattr(bench, "prepare", prepare)
    monkeypatch.setattr(compare, "Rounds", functools.partial(paired.Rounds, timer=clock))
    return calls


def measured(monkeypatch, **fakes) -> tuple[ComparisonRow, Session, FakeBenchmark, dict]:
    session, benchmark = Session(torch.float32, RunRecord("quick", "pytest")), FakeBenchmark()
    calls = fake_networks(monkeypatch, FakeClock(), **fakes)
    row = session.measure(benchmark, item())
    return row, session, benchmark, calls


def test_the_row_keeps_each_networks_timed_rounds_and_the_paired_ratios(monkeypatch):
    row, session, benchmark, calls = measured(monkeypatch)
    assert benchmark.calls == ROUNDS and set(calls.values()) == {ROUNDS + 2}  # its check, the warm-up round, the rounds
    timed = slice(2, 2 + ROUNDS)
    assert row.times == {name: series[timed].tolist() for name, series in SERIES.items()}  # the warm-up left out
    ratios = {(e.numerator, e.denominator): e for e in row.ratios}
    assert set(ratios) == {("sw_tiny[numba_cpu]", other) for other in ("sw_tiny_rep", "unireplknet_tiny", "slak_tiny")}
    # A constant per-round ratio under the drifting load: exact, with an interval of zero width.
    for other, expected in (("sw_tiny_rep", 2.0), ("slak_tiny", 1.5)):
        entry = ratios[("sw_tiny[numba_cpu]", other)]
        assert (entry.ratio, entry.low, entry.high) == pytest.approx((expected, expected, expected), rel=1e-12)
        assert entry.rounds == ROUNDS and entry.confidence == 0.95
    # Per round (images/s of SW over UniRepLKNet's = its time over SW's): 0.5, 1, 0.5, 1, 0.5, 1.
    per_round = np.array([0.5, 1, 0.5, 1, 0.5, 1])
    entry = ratios[("sw_tiny[numba_cpu]", "unireplknet_tiny")]
    assert entry.ratio == pytest.approx(np.sqrt(0.5))  # the geometric mean, by hand
    means = np.log(per_round)[np.random.default_rng(0).integers(0, ROUNDS, size=(4000, ROUNDS))].mean(axis=1)
    assert (entry.low, entry.high) == pytest.approx(tuple(np.exp(np.quantile(means, [0.025, 0.975]))))
    assert 0.5 <= entry.low < entry.ratio < entry.high <= 1.0
    assert row.verified == {name: f"{name} checked" for name in SERIES} and row.failed == row.not_run == {}
    assert row.deterministic is True and row.implementation == "numba_cpu" and not session.record.failures
    assert row_from_extra_info(benchmark.extra_info) == row  # what the JSON keeps reads back, validated
    assert benchmark.group == "models/table7-sw_tiny-b1"


def test_one_network_that_fails_is_recorded_against_itself_and_the_others_are_compared(monkeypatch):
    row, session, _, _ = measured(monkeypatch, broken={"slak_tiny": "SW layer 3 exceeds the bound"},
                                  wrong="sw_tiny_rep")  # fmt: skip
    assert set(row.times) == {"sw_tiny[numba_cpu]", "unireplknet_tiny"}
    assert [(e.numerator, e.denominator) for e in row.ratios] == [("sw_tiny[numba_cpu]", "unireplknet_tiny")]
    assert set(row.failed) == {"slak_tiny", "sw_tiny_rep"} and "SW layer 3 exceeds the bound" in row.failed["slak_tiny"]
    assert "logits differ" in row.failed["sw_tiny_rep"] and "sw_tiny_rep-cpu-sw_tiny_rep-b1" in row.failed["sw_tiny_rep"]
    assert set(row.networks) == set(SERIES)  # nothing lost: the left-out networks are named in the row
    failures = {(f.computation, f.case, f.kind) for f in session.record.failures}
    assert failures == {("slak_tiny", "slak_tiny-b1", "comparison"), ("sw_tiny_rep", "sw_tiny_rep-b1", "comparison")}
    session.reproduce(item(), "pytest --benchmark-only 'tests/test_model_benchmarks.py::test_table7_comparison[table7-cpu-sw_tiny-b1]'")
    assert {f.reproducer for f in session.record.failures} == {
        "pytest --benchmark-only 'tests/test_model_benchmarks.py::test_table7_comparison[table7-cpu-sw_tiny-b1]'"}  # fmt: skip
    text = "\n".join(paired_section([row]))
    assert "slak_tiny failed, not compared: ModelMismatch: SW layer 3 exceeds the bound" in text


def test_without_its_sw_network_there_is_nothing_to_compare(monkeypatch):
    session = Session(torch.float32, RunRecord("quick", "pytest"))
    fake_networks(monkeypatch, FakeClock(), broken={"sw_tiny[numba_cpu]": "wrong ghost order"})
    with pytest.raises(compare.NothingToCompare, match="wrong ghost order"):
        session.measure(FakeBenchmark(), item())
    assert [(f.computation, f.kind) for f in session.record.failures] == [
        ("sw_tiny[numba_cpu]", "comparison"), ("table7:sw_tiny[numba_cpu]", "comparison")]  # fmt: skip


def test_a_stored_ratio_that_does_not_follow_from_its_times_is_refused(monkeypatch):
    _, _, benchmark, _ = measured(monkeypatch)
    info = json.loads(json.dumps(benchmark.extra_info))
    info["ratios"][0]["ratio"] *= 1.1
    with pytest.raises(ResultFormatError, match="does not follow from its times"):
        row_from_extra_info(info)
    info = json.loads(json.dumps(benchmark.extra_info))
    info["times"]["slak_tiny"][0] = "fast"
    with pytest.raises(ResultFormatError, match=r"extra_info 'times'\['slak_tiny'\]\[0\] must be float"):
        row_from_extra_info(info)


def test_a_comparison_needs_two_rounds():
    with pytest.raises(ValueError, match="compare_rounds must be >= 2"):
        case("sw_tiny", compare_rounds=1)


# ----------------------------------------------------------------------------- collection
def ids(tier: str, devices=("cpu",)) -> dict[str, compare.ComparisonItem]:
    return {i.id: i for i in compare.comparison_items(Selection(("models",), tier, devices, torch.float32))}


def test_each_tier_has_a_comparison_per_sw_case_and_device():
    quick = ids("quick", ("cpu", "cuda"))
    assert set(quick) == {"table7-cpu-sw_tiny-b1", "table7-cuda-sw_tiny-b1"}
    cpu = quick["table7-cpu-sw_tiny-b1"]
    assert cpu.skip is None and cpu.sw.implementation == resolve_impl("auto", "cpu", torch.float32) == "numba_cpu"
    assert [o.computation for o in cpu.others] == ["sw_tiny_rep", "slak_tiny", "unireplknet_tiny"]
    assert {o.case.name for o in cpu.others} == {"sw_tiny_rep-b1", "slak_tiny-b1", "unireplknet_tiny-b1"}
    assert cpu.rounds == 20
    if not torch.cuda.is_available():
        assert quick["table7-cuda-sw_tiny-b1"].skip
    full = ids("full")
    sw_cases = {"sw_tiny-b1", "sw_tiny-k5-b1", "sw_small-b1", *(f"sw_{s}-b{b}" for s in ("tiny", "small") for b in (32, 64, 128))}
    assert set(full) == {f"table7-cpu-{name}" for name in sw_cases}
    # SW-tiny with k = 5 has no merged form of its own in the suite: it is compared with the others only
    assert [o.computation for o in full["table7-cpu-sw_tiny-k5-b1"].others] == ["slak_tiny", "unireplknet_tiny"]
    assert [full[f"table7-cpu-sw_small-b{b}"].rounds for b in (1, 32, 64, 128)] == [20, 10, 6, 6]
    assert [(o.case.name) for o in full["table7-cpu-sw_small-b64"].others] == ["sw_small_rep-b64", "slak_small-b64", "unireplknet_small-b64"]


def test_the_comparisons_are_benchmark_items_of_the_plugin_and_the_gpu_days_selection_leaves_them_out():
    def collected(*args: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "pytest", "tests/test_model_benchmarks.py", "--benchmark-only", "--suite", "models",
                               "--bench-device", "cpu", "--collect-only", "-q", "-p", "no:randomly", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        return [line for line in done.stdout.splitlines() if line.startswith("tests/")]

    assert [n for n in collected() if "test_table7_comparison" in n] == ["tests/test_model_benchmarks.py::test_table7_comparison[table7-cpu-sw_tiny-b1]"]
    assert [n for n in collected("-k", "sw_tiny_rep-b1") if "table7" in n] == []  # the GPU day's dry run (harness.gpuday.phases)


# ----------------------------------------------------------------------------- the report
def test_the_report_gives_each_paired_ratio_with_its_interval(monkeypatch, tmp_path):
    _, _, benchmark, _ = measured(monkeypatch)
    from tests.test_report import make_run, network_benchmark, save

    stats = {"min": 1.0, "max": 1.0, "mean": 1.0, "stddev": 0.0, "rounds": ROUNDS, "median": 1.0, "iqr": 0.0,
             "q1": 1.0, "q3": 1.0, "ops": 1.0, "iterations": 1}  # fmt: skip
    comparison = {"name": "table7", "stats": stats, "extra_info": benchmark.extra_info}
    networks = [network_benchmark("sw_tiny", "numba_cpu", 0.5), network_benchmark("unireplknet_tiny", None, 0.25)]
    with_both = render_report([save(tmp_path / "both.json", make_run(benchmarks=[*networks, comparison]))]).markdown
    section = with_both.split("## Table 7 on this machine")[1].split("## Results")[0]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    paper = PAPER_A100["sw_tiny"][1] / PAPER_A100["unireplknet_tiny"][1]
    assert ["SW-tiny / UniRepLKNet-T", "0.5 (SW: numba_cpu)", f"{paper:.2f}"] in cells  # the independent medians stay
    assert "| ratio (independent medians) | here | A100 (paper) |" in section
    low, high = (f"{v:.3g}" for v in (row_from_extra_info(benchmark.extra_info).ratios[1].low,
                                        row_from_extra_info(benchmark.extra_info).ratios[1].high))  # fmt: skip
    assert ["SW-tiny / UniRepLKNet-T", "sw_tiny-b1", "numba_cpu", f"{np.sqrt(0.5):.3g}", f"{low} – {high}", str(ROUNDS), f"{paper:.2f}"] in cells
    assert ["SW-tiny / SW-tiny Rep", "sw_tiny-b1", "numba_cpu", "2", "2 – 2", str(ROUNDS), "—"] in cells
    # images/s of each network, the median of its timed rounds (SW's: 0.125 x the load's median 3)
    assert ["sw_tiny-b1", "SW-tiny", "numba_cpu", f"{1 / (0.125 * 3):.3g}"] in cells
    only = render_report([save(tmp_path / "only.json", make_run(benchmarks=[comparison]))]).markdown
    assert "SW-tiny / SLaK-T | sw_tiny-b1 | numba_cpu | 1.5 | 1.5 – 1.5 |" in only  # a run of the comparison alone
    older = render_report([save(tmp_path / "old.json", make_run(benchmarks=networks))]).markdown
    assert "Paired ratios" not in older and "| SW-tiny / UniRepLKNet-T | 0.5 (SW: numba_cpu) |" in older


def test_a_round_series_is_read_back_in_order():
    clock, log = FakeClock(), []
    steps = {"a": iter([1.0, 2.0, 3.0]), "b": iter([4.0, 5.0, 6.0])}

    def call(name):
        log.append(name)
        clock.now += next(steps[name])
        return name

    rounds = paired.Rounds({name: functools.partial(call, name) for name in "ab"}, seed=3, timer=clock)
    results = [rounds.run() for _ in range(3)]
    assert all(list(r) == ["a", "b"] for r in results)  # by name, whatever order they ran in
    assert {k: v.tolist() for k, v in rounds.times().items()} == {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}
    assert {k: v.tolist() for k, v in rounds.times(last=2).items()} == {"a": [2.0, 3.0], "b": [5.0, 6.0]}
    with pytest.raises(ValueError, match="last 4 rounds of 3"):
        rounds.times(last=4)


def test_an_sw_network_and_its_merged_form_share_one_reference_whatever_their_rounds(monkeypatch):
    asked = []
    monkeypatch.setattr(bench, "_reference_of", lambda case, device: asked.append(case))
    cases = {c.name: c for c in bench.load_model_cases(suites=["models"])}
    assert cases["sw_tiny-b64"].compare_rounds != cases["sw_tiny_rep-b64"].compare_rounds
    bench._case_reference(cases["sw_tiny-b64"], "cpu")
    bench._case_reference(cases["sw_tiny_rep-b64"], "cpu")
    assert asked[0] == asked[1]  # one key: the float64 reference is computed once for both
