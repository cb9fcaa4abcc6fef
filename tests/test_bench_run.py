"""The benchmark machinery: what is timed, what is refused, and one real (tiny) benchmark run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.bench import ResultMismatch, computations, outputs_equal
from harness.cases import Case, Tier, load_cases
from harness.results import BenchmarkRow
from harness.registry import Role, discover

ROOT = Path(__file__).resolve().parents[1]
BAD_IMPLS = Path(__file__).parent / "bad_impls"
CASE = Case("bench-tiny", 13, 3, 4, 2, 2, 9, 11, seed=5, sparsity=0.3)


def test_every_implementation_and_peer_is_a_computation_with_its_declared_role():
    found = {c.name: c for c in computations()}
    assert found["cuda_atomic"].role is Role.IMPLEMENTATION and found["cuda_atomic"].implementation is not None
    assert found["torch_roll"].role is Role.PYTORCH_WAY  # an implementation that is a plain PyTorch way
    assert {"rep_merged", "rep_cross", "slak_strips", "unireplk_13x13"} <= {n for n, c in found.items() if c.peer}
    assert found["slak_strips"].role is Role.OTHER_OPERATOR and found["rep_merged"].role is Role.PYTORCH_WAY
    assert [n for n, c in found.items() if c.baseline] == ["rep_merged"]


def test_emulated_gpu_code_is_never_timed():
    by_name = {c.name: c for c in computations()}
    reason = by_name["cuda_atomic"].not_benchmarked_reason("cpu")
    assert reason is not None and "never timed" in reason
    assert by_name["torch_roll"].not_benchmarked_reason("cpu") is None
    assert by_name["rep_merged"].not_benchmarked_reason("cpu") is None


def test_peers_too_slow_for_the_quick_tier_wait_for_the_full_tier():
    by_name = {c.name: c for c in computations()}
    for name in ("compiled_rep_merged", "compiled_shift_add", "rep_cross"):
        reason = by_name[name].not_benchmarked_reason("cpu", "quick")
        assert reason is not None and reason.startswith("timed from the full tier on: "), name
        assert by_name[name].not_benchmarked_reason("cpu", "full") is None
    assert by_name["rep_merged_cl"].not_benchmarked_reason("cpu", "quick") is None


def test_a_correct_implementation_is_verified_and_deterministic():
    (roll,) = [c for c in computations() if c.name == "torch_roll"]
    prepared = roll.prepare(CASE, torch.float32, "cpu")
    first, second = prepared.run(), prepared.run()
    row = prepared.row(prepared.verify(first))
    assert row.verified == "matches the reference within the error bound" and row.kind == "layer"
    assert outputs_equal(first, second)
    assert row.traffic_bytes is None and row.flops == row.useful_flops > 0


def test_a_wrong_implementation_is_refused_before_timing():
    impl = discover(BAD_IMPLS).implementations["bad_swapped_branches"]
    from harness.bench import Computation

    prepared = Computation(impl.name, Role.IMPLEMENTATION, "", implementation=impl).prepare(CASE, torch.float32, "cpu")
    with pytest.raises(ResultMismatch, match="bad_swapped_branches on bench-tiny: branch h: .* elements differ"):
        prepared.verify(prepared.run())


def test_outputs_equal_is_bitwise():
    a = torch.tensor([0.0, 1.0])
    assert outputs_equal((a, a), (a.clone(), a.clone()))
    assert not outputs_equal((a,), (torch.tensor([-0.0, 1.0]),))
    assert not outputs_equal((a, a), (a,))


def test_tiers_nest_and_check_cases_are_never_benchmarked():
    cases = load_cases()
    quick = [c for c in cases if Tier.QUICK.includes(c.tier)]
    full = [c for c in cases if Tier.FULL.includes(c.tier)]
    assert set(quick) < set(full)
    assert not any(c.suite == "edge" for c in full)
    assert {c.suite for c in quick} >= {"sw_tiny", "sw_small", "sweep_big_kernel", "sweep_groups", "sweep_sparsity"}
    assert Tier.FULL.includes("quick") and not Tier.QUICK.includes("full") and not Tier.FULL.includes("check")
    with pytest.raises(ValueError, match="tier must be one of \\('quick', 'full'\\), got 'check'"):
        Tier.parse("check")


def test_a_benchmark_run_records_results_failures_and_what_was_not_run(tmp_path):
    """pytest --benchmark-only end to end on one small case: a good implementation, a wrong
    one (recorded as failed, the run goes on), a peer; the JSON carries the figures."""
    impls = tmp_path / "impls"
    impls.mkdir()
    shutil.copy(ROOT / "impls" / "torch_roll.py", impls)
    shutil.copy(BAD_IMPLS / "zeros.py", impls)
    output = tmp_path / "run.json"
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(ROOT / "tests" / "test_benchmarks.py"),
        str(ROOT / "tests" / "test_cases.py"),  # plain tests beside benchmarks: deselected, not listed as skipped
        "--benchmark-only", "--suite", "sweep_small_kernel",
        "-k", "(k3 and (torch_roll-cpu or bad_zeros or rep_merged-cpu) and not compiled) or rep_cross-cpu",
        "--benchmark-max-time=0.01", "--benchmark-min-rounds=2", "--peak-gflops=50", f"--benchmark-json={output}",
        f"--benchmark-histogram={tmp_path / 'histogram'}",  # needs pygal: pytest-benchmark[histogram]
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "SW_IMPLS_DIR": str(impls)}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # bad_zeros failed, nothing else
    assert "1 failed, 2 passed, 1 skipped" in done.stdout, done.stdout[-3000:]
    assert list(tmp_path.glob("histogram*.svg")), "--benchmark-histogram wrote no SVG"
    run = json.loads(output.read_text())
    timed = {b["extra_info"]["computation"]: b["extra_info"] for b in run["benchmarks"]}
    assert set(timed) == {"torch_roll", "rep_merged"}
    roll = timed["torch_roll"]
    assert roll["verified"].startswith("matches the reference") and roll["deterministic"] is True
    assert roll["useful_flops"] == roll["flops"] == timed["rep_merged"]["useful_flops"]
    assert "metrics" not in roll and roll["threads"] == torch.get_num_threads()  # figures are derived, not stored
    assert BenchmarkRow.from_extra_info(roll).role == Role.PYTORCH_WAY.value
    assert "non-benchmark" not in done.stdout and "deselected" in done.stdout
    peaks = run["machine_info"]["sw"]["peaks"]
    assert peaks["gflops"] == 50 and peaks["gflops_source"] == "given on the command line"
    assert peaks["gbps"] > 0 and peaks["gbps_source"].startswith("probe")
    assert run["sw"]["interrupted"] is False and run["sw"]["load_errors"] == {}
    assert not list(tmp_path.glob(".run.json.*"))  # written beside, moved into place
    (failure,) = run["sw"]["failures"]
    assert failure["computation"] == "bad_zeros" and "ResultMismatch" in failure["error"]
    # What -k selected and could not run, and nothing it deselected (torch_roll-cuda, the other peers).
    assert [(e["computation"], e["device"], e["kind"]) for e in run["sw"]["not_run"]] == [("rep_cross", "cpu", "layer")]
    assert run["sw"]["not_run"][0]["reason"].startswith("timed from the full tier on: ")
    assert run["sw"]["suites"] == ["sweep_small_kernel"] and list(run["sw"]["suite_descriptions"]) == ["sweep_small_kernel"]
    probes = run["sw"]["probes"]  # before the first benchmark and after the last
    assert set(probes) == {"start", "end"} and probes["start"]["cpu"] == peaks and probes["end"]["cpu"]["gflops"] == 50
    assert "kernels" not in run["sw"] or run["sw"]["kernels"] == []  # swbench kernels' artifact, not compiled here
    # The report command reads the real file: the failure and the timed computations appear.
    from harness.cli import main

    assert main(["report", str(output), "--output", str(tmp_path / "report.md")]) == 0
    markdown = (tmp_path / "report.md").read_text()
    results = markdown.split("### Suite `sweep_small_kernel`")[1].split("##")[0]
    timed_rows = [[cell.strip() for cell in line.strip("|").split("|")][:2] for line in results.splitlines() if line.startswith("| k3")]
    assert ["k3", "torch_roll"] in timed_rows and ["k3", "rep_merged"] in timed_rows
    assert "bad_zeros" in markdown.split("## Failures")[1] and "rep_cross" in markdown.split("## Not run")[1]
    assert list(tmp_path.glob("report-roofline-*.png"))  # one case: no sweep varies, no sweep plot
