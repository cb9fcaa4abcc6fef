"""A layer case's implementations against its PyTorch ways, timed interleaved
(harness.layer_compare): the items of a run, the row of real computations on a small case (its
rounds, the fastest way, the paired ratios read back validated), a wrong or cheating
implementation left out with the blame on it and the others compared, and the report's
summary column."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import discover
from harness.bench import Computation, Selection, Session, computations
from harness.cases import Case
from harness.layer_compare import LayerComparisonItem, NothingToCompare, layer_comparison_items
from harness.registry import Role
from harness.report import render_report
from harness.results import LayerComparisonRow, ResultFormatError, RunRecord, row_from_extra_info
from tests.test_compare import FakeBenchmark

BAD_IMPLS = Path(__file__).parent / "bad_impls"
ROUNDS = 4
CASE = Case("t", 7, 3, 4, 2, 1, 8, 9, tables="random", seed=3, sparsity=0.3, suite="unit", compare_rounds=ROUNDS)


def members(*names: str, extra: dict | None = None) -> tuple[Computation, ...]:
    found = {c.name: c for c in computations()} | (extra or {})
    return tuple(found[name] for name in names)


def bad(file: str, tmp_path: Path) -> Computation:
    """A known-bad implementation loaded from a fresh copy of its file (its module state starts empty)."""
    shutil.copy(BAD_IMPLS / f"{file}.py", tmp_path / f"{file}.py")
    (impl,) = discover(tmp_path).implementations.values()
    return Computation(impl.name, Role.IMPLEMENTATION, "", implementation=impl)


def measure(item: LayerComparisonItem) -> tuple[LayerComparisonRow, Session, FakeBenchmark]:
    session, benchmark = Session(torch.float32, RunRecord("quick", "pytest")), FakeBenchmark()
    return session.measure(benchmark, item), session, benchmark


def test_the_row_keeps_every_computations_rounds_the_fastest_way_and_the_paired_ratios():
    item = LayerComparisonItem(CASE, "cpu", members("numba_cpu", "rep_merged", "rep_merged_cl", "torch_roll"))
    row, session, benchmark = measure(item)
    assert benchmark.calls == ROUNDS and not session.record.failures
    assert set(row.times) == {"numba_cpu", "rep_merged", "rep_merged_cl", "torch_roll"}
    assert {len(t) for t in row.times.values()} == {ROUNDS} and all(s > 0 for t in row.times.values() for s in t)
    assert row.roles["numba_cpu"] == "implementation" and row.roles["torch_roll"] == "pytorch_way"
    ways = {n: np.exp(np.mean(np.log(row.times[n]))) for n in ("rep_merged", "rep_merged_cl", "torch_roll")}
    assert row.fastest_way == min(ways, key=ways.get)
    assert {(e.numerator, e.denominator) for e in row.ratios} == {("numba_cpu", way) for way in ways}
    for entry in row.ratios:  # speed of numba_cpu over the way: the way's time over numba_cpu's, per round
        per_round = np.asarray(row.times[entry.denominator]) / np.asarray(row.times["numba_cpu"])
        assert entry.ratio == pytest.approx(np.exp(np.mean(np.log(per_round))), rel=1e-12)
        assert entry.low <= entry.ratio <= entry.high and entry.rounds == ROUNDS
    assert row.ratio("numba_cpu") is row.ratios[[e.denominator for e in row.ratios].index(row.fastest_way)]
    assert row.verified["numba_cpu"] == "matches the reference within the error bound"
    assert row_from_extra_info(benchmark.extra_info) == row  # what the JSON keeps reads back, validated
    assert benchmark.group == "unit/t/interleaved" and item.id == "interleaved-cpu-unit-t"


def test_a_wrong_implementation_is_blamed_alone_and_the_others_are_compared(tmp_path):
    item = LayerComparisonItem(CASE, "cpu", (bad("shift_off_by_one", tmp_path), *members("numba_cpu", "rep_merged")))
    row, session, _ = measure(item)
    (failure,) = session.record.failures
    assert failure.computation == "bad_shift_off_by_one" and failure.kind == "layer_comparison" and "ResultMismatch" in failure.error
    assert set(row.times) == {"numba_cpu", "rep_merged"} and "bad_shift_off_by_one" in row.failed
    assert [(e.numerator, e.denominator) for e in row.ratios] == [("numba_cpu", "rep_merged")]


@pytest.mark.parametrize(("cheat", "caught"), [
    ("cheat_replays_by_pointer", "TimedCallsCheat"),  # right every time, the same memory: after the rounds
    ("cheat_works_once", "ResultMismatch"),  # right on its own first call, wrong in the first round
])  # fmt: skip
def test_a_cheat_caught_in_the_rounds_loses_its_times_and_the_others_stand(cheat, caught, tmp_path):
    item = LayerComparisonItem(CASE, "cpu", (bad(cheat, tmp_path), *members("numba_cpu", "rep_merged_cl")))
    row, session, _ = measure(item)
    assert [f.computation for f in session.record.failures] == [cheat]
    assert caught in row.failed[cheat] and cheat not in row.times
    assert {e.numerator for e in row.ratios} == {"numba_cpu"} and row.fastest_way == "rep_merged_cl"


def test_without_a_pytorch_way_left_there_is_nothing_to_compare(tmp_path):
    item = LayerComparisonItem(CASE, "cpu", members("numba_cpu"))
    with pytest.raises(NothingToCompare, match="numba_cpu"):
        measure(item)


def test_the_items_are_the_cases_with_compare_rounds_and_their_timed_implementations_and_ways():
    items = layer_comparison_items(Selection(("sw_tiny", "sweep_groups"), "quick", ("cpu",), torch.float32))
    assert {i.case.suite for i in items} == {"sw_tiny"}  # sweep_groups' cases have no compare_rounds
    assert len(items) == 24 and len({(i.case.name, i.form) for i in items}) == 24  # SW-tiny's quick cases, one item per form
    for item in items:  # like with like: a form's members all compute it
        assert {m.form for m in item.members} == {item.form}
    deployed = {m.name for m in items[-1].members}
    assert items[-1].form == "deployed" and deployed == {"numba_cpu+deployed", "deployed_merged", "deployed_merged_cl"}
    names = {m.name: m.role for m in items[0].members}
    assert names["numba_cpu"] is Role.IMPLEMENTATION and names["rep_merged_cl"] is Role.PYTORCH_WAY
    assert not {"slak_strips", "unireplknet_13x13", "rep_merged_cl_bf16", "compiled_rep_merged"} & set(names)  # context / full tier
    assert not {"cuda_atomic", "numba_shared"} & set(names)  # not timed on a CPU
    assert all(i.rounds == 30 for i in items)


def test_a_case_refuses_a_single_compare_round():
    with pytest.raises(ValueError, match="compare_rounds must be 0 .* or an int >= 2.*got 1"):
        dataclasses.replace(CASE, compare_rounds=1)


def test_a_tampered_ratio_or_fastest_way_is_refused_when_read():
    item = LayerComparisonItem(CASE, "cpu", members("numba_cpu", "rep_merged", "rep_merged_cl"))
    _, _, benchmark = measure(item)
    info = json.loads(json.dumps(benchmark.extra_info))
    info["ratios"][0]["ratio"] *= 1.5
    with pytest.raises(ResultFormatError, match="does not follow from its times"):
        row_from_extra_info(info)
    info = json.loads(json.dumps(benchmark.extra_info))
    info["fastest_way"] = next(w for w in ("rep_merged", "rep_merged_cl") if w != info["fastest_way"])
    with pytest.raises(ResultFormatError, match="is not the PyTorch way of least time"):
        row_from_extra_info(info)


def test_the_summary_shows_the_paired_speedup_with_its_interval(tmp_path):
    """A real benchmark run of one case: the summary's paired column is the comparison row's."""
    import subprocess
    import sys

    out = tmp_path / "run.json"
    command = [sys.executable, "-m", "pytest", "--benchmark-only", "--suite", "sw_tiny", "-k", "tiny-s4-sp0.3 and (numba_cpu or rep_merged_cl or deployed_merged_cl or interleaved)",
               "-p", "no:randomly", "-q", "-n", "0", f"--benchmark-json={out}", "tests/test_benchmarks.py"]  # fmt: skip
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = {r.form: r for r in (row_from_extra_info(b["extra_info"]) for b in data["benchmarks"]) if r.kind == "layer_comparison"}
    assert set(rows) == {"operator", "deployed"}  # one comparison per form, like with like
    assert "numba_cpu+deployed" not in rows["operator"].times and "deployed_merged_cl" not in rows["operator"].times
    assert {e.numerator for e in rows["deployed"].ratios} == {"numba_cpu+deployed"} and rows["deployed"].fastest_way.startswith("deployed_merged")
    markdown = render_report([out]).markdown
    summary = markdown.split("## Summary")[1].split("\n## ")[0]
    assert "paired speedup [95%]" in summary
    from harness.report.format import number

    for form, implementation in (("operator", "numba_cpu"), ("deployed", "numba_cpu+deployed")):  # a summary line per form
        cells = lambda line: [c.strip() for c in line.split("|")]  # noqa: E731
        line = next(line for line in summary.splitlines() if "tiny-s4-sp0.3" in line and form in cells(line))
        assert implementation in cells(line)
        entry = rows[form].ratio(implementation)
        assert f"{number(entry.ratio)} [{number(entry.low)}, {number(entry.high)}]" in line


def test_the_members_share_one_float64_reference():
    """Every member draws the case's seeded inputs: the comparison evaluates the reference once
    for them all (and once for the -x probe after the rounds), not once per member and check."""
    item = LayerComparisonItem(CASE, "cpu", members("numba_cpu", "torch_roll", "rep_merged", "rep_merged_cl", "rep_cross"))
    _, session, _ = measure(item)
    assert not session.record.failures
    assert session.references.evaluations == 3  # the branches with their bound, the -x probe's, the one-output sum's bound


def _deployed_without_residual(x, weight, spec, branch_scale, branch_bias, out_scale, out_shift, rep, ghost):
    """A deployed layer that forgets the identity residual: h + v + i, not h + v + i + x."""
    from harness.reference import reference_forward

    return sum(reference_forward(x, weight, spec)).contiguous(memory_format=torch.channels_last)


def test_an_implementations_deployed_layer_is_compared_with_the_deployed_pytorch_forms():
    """``numba_cpu+deployed`` (its whole deployed layer, one output h + v + i + x) is timed
    against the deployed PyTorch forms like with like; a deployed layer that drops the residual is
    refused by the same check and blamed alone."""
    (deployed,) = members("numba_cpu+deployed")
    assert deployed.deployed and deployed.implementation.name == "numba_cpu"
    wrong = dataclasses.replace(deployed, name="no_residual+deployed",
                                implementation=dataclasses.replace(deployed.implementation, deployed=_deployed_without_residual))  # fmt: skip
    item = LayerComparisonItem(CASE, "cpu", (deployed, wrong, *members("deployed_merged", "deployed_merged_cl")), form="deployed")
    row, session, _ = measure(item)
    assert [f.computation for f in session.record.failures] == ["no_residual+deployed"]
    assert "h + v + i + x" in row.failed["no_residual+deployed"]
    assert row.verified["numba_cpu+deployed"] == "h + v + i + x matches the reference within its error bound"
    assert {(e.numerator, e.denominator) for e in row.ratios} == {("numba_cpu+deployed", w) for w in ("deployed_merged", "deployed_merged_cl")}
    assert row.form == "deployed" and item.id == "interleaved-deployed-cpu-unit-t" and row_from_extra_info(row.to_extra_info()) == row
