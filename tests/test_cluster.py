"""``swbench cluster``: the benchmark matrix through submitit, one job per target, one report;
failed and lost jobs listed, never dropped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import cluster
from harness.cli import EXIT_FAILED, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parents[1]
#: A tiny matrix: one small case, one implementation, short timing, no probes or kernel builds.
TINY = ["--suite", "sweep_big_kernel", "--impl", "torch_roll", "--case", "M7",
        "--bench-args=--no-kernel-table --peak-gflops 1 --peak-gbps 1 --benchmark-max-time=0.01 --benchmark-min-rounds=1"]  # fmt: skip


def test_a_target_is_a_name_and_its_executor_parameters():
    target = cluster.Target.parse("h100:partition=gpu,gres=gpu:h100:1,time=30,mem=80.5,slurm_qos=high,device=cuda")
    assert target == cluster.Target(
        "h100", {"slurm_partition": "gpu", "slurm_gres": "gpu:h100:1", "timeout_min": 30, "mem_gb": 80.5, "slurm_qos": "high"}, "cuda"
    )
    assert cluster.Target.parse("a100") == cluster.Target("a100", {}, "all")
    for bad, message in [("a b", "the name must be"), ("x:partition", "expected KEY=VALUE"), ("x:device=tpu", "device must be one of"),
                         ("../up", "the name must be"), ("x:colour=red", "unknown key 'colour'"),
                         ("x:slurm_colour=red", "unknown key 'slurm_colour'")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            cluster.Target.parse(bad)


def test_the_selection_is_pytests_k_expression_over_benchmark_ids():
    matrix = cluster.Matrix(computations=("torch_roll", "rep_merged"), cases=(("sw_tiny", "tiny-s4"), ("models", "sw_tiny-b1")))
    assert matrix.selection() == "([torch_roll- or [rep_merged-) and (-sw_tiny-tiny-s4] or -sw_tiny-b1])"
    assert cluster.Matrix().selection() is None
    args = cluster.Matrix(tier="full", suites=("sw_tiny",)).pytest_args("cuda", Path("o.json"))
    assert args == [*cluster.BENCH_FILES, "--benchmark-only", "--tier", "full", "--suite=sw_tiny", "--bench-device", "cuda", "--benchmark-json=o.json",
                    *cluster.BENCH_ARGS]  # fmt: skip


def test_the_benchmark_files_are_every_test_file_that_times():
    timing = sorted(
        f"tests/{path.name}" for path in (ROOT / "tests").glob("test_*.py")
        if re.search(r"^def test_\w*\([^)]*\bbenchmark\b", path.read_text(), re.M)
    )  # fmt: skip
    assert timing == sorted(cluster.BENCH_FILES)


def test_default_timing_options_are_make_bench_s():
    makefile = (ROOT / "Makefile").read_text()
    (line,) = re.findall(r"^BENCH_ARGS \?= (.*)$", makefile, re.M)
    assert tuple(line.split()) == cluster.BENCH_ARGS


@pytest.mark.parametrize(
    "args, message",
    [
        (["--impl", "nope"], "--impl: unknown implementation(s) or peer(s) ['nope']"),
        (["--suite", "nope"], "--suite: unknown suites ['nope']"),
        (["--suite", "edge"], "--suite: no case of the quick tier in edge"),
        (["--case", "nope"], "--case: no case 'nope' of the quick tier"),
        (["--target", "a b"], "--target: target 'a b': the name must be"),
        (["--target", "a", "--target", "a"], "--target: target names must be unique"),
        (["--executor-param", "novalue"], "--executor-param: expected KEY=VALUE"),
        (["--bench-args='unclosed"], "--bench-args: No closing quotation"),
    ],
)
def test_usage_errors_are_one_line_and_submit_nothing(args, message, tmp_path, capsys):
    assert main(["cluster", "--output", str(tmp_path / "run"), *args]) == EXIT_USAGE
    out = capsys.readouterr().out
    assert message in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "run").exists()


def test_a_run_never_writes_into_a_used_folder(tmp_path, capsys):
    (tmp_path / "earlier.json").write_text("{}")
    assert main(["cluster", "--output", str(tmp_path), *TINY]) == EXIT_USAGE
    assert "exists and is not an empty folder" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["earlier.json"]


class _FakeJob:
    """A done submitit job whose result (or error) is given."""

    def __init__(self, result=None, error=None, state="COMPLETED"):
        self._result, self._error, self.state, self.job_id = result, error, state, "42"

    def done(self):
        return True

    def result(self):
        if self._error:
            raise self._error
        return self._result


def test_every_way_a_job_ends_is_recorded_and_listed(tmp_path):
    from submitit.core.utils import FailedJobError, UncompletedJobError

    def outcome(name, job, json_written):
        spec = cluster.JobSpec(cluster.Target(name), cluster.Matrix(), tmp_path / "runs" / f"{name}.json", tmp_path / "logs" / f"{name}.log")
        if json_written:
            spec.output.parent.mkdir(exist_ok=True)
            spec.output.write_text("{}")
        record = cluster.JobRecord(name, {}, "all", log=f"logs/{name}.log")
        cluster.job_outcome(record, job, tmp_path, spec)
        return record

    result = {"returncode": 0, "host": "node1", "seconds": 3.0, "command": "pytest", "wrote_json": True}
    ok = outcome("ok", _FakeJob(result), True)
    assert (ok.state, ok.run, ok.host, ok.error) == ("finished", "runs/ok.json", "node1", None)
    failing = outcome("failing", _FakeJob({**result, "returncode": 1}), True)
    assert failing.state == "failed" and failing.run == "runs/failing.json" and "exited with status 1" in failing.error
    silent = outcome("silent", _FakeJob(result), False)
    assert silent.state == "failed" and "wrote no JSON" in silent.error
    trace = "Job (task=0) failed during processing with trace:\n" + "-" * 22 + "\nTraceback:\n  File x\nKeyError: 'x'\n" + "-" * 22 + "\nlogs"
    raised = outcome("raised", _FakeJob(error=FailedJobError(trace)), False)
    assert raised.state == "failed" and raised.error == "the job raised KeyError: 'x'"
    lost = outcome("lost", _FakeJob(error=UncompletedJobError("Job 7 has not produced any output"), state="NODE_FAIL"), False)
    assert lost.state == "lost" and "state NODE_FAIL" in lost.error and lost.run is None

    table = cluster.jobs_markdown([ok, failing, silent, raised, lost])
    assert "1 of 5 finished and passed" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| target")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == ["ok", "failing", "silent", "raised", "lost"]
    assert "| lost |" in rows[-1] and "NODE_FAIL" in rows[-1]


def test_each_job_gets_its_targets_parameters_only_and_every_job_is_collected(tmp_path, monkeypatch, capsys):
    """A stand-in for submitit's executor: what each job was submitted with, and jobs that end
    finished, failed and lost; the run lists all three and fails."""
    import submitit
    from submitit.core.utils import UncompletedJobError

    submitted = []

    class Executor:
        def __init__(self, folder, cluster):
            self.parameters = {}

        def update_parameters(self, **parameters):
            self.parameters.update(parameters)

        def submit(self, fn, spec):
            submitted.append((spec.target.name, dict(self.parameters)))
            spec.output.parent.mkdir(parents=True, exist_ok=True)
            if spec.target.name == "lost":
                return _FakeJob(error=UncompletedJobError("no output"), state="PREEMPTED")
            if spec.target.name == "ok":
                spec.output.write_text("{}")  # an empty JSON: the report then fails to read it, listed too
            return _FakeJob({"returncode": 0 if spec.target.name == "ok" else 1, "host": "n", "seconds": 1.0, "command": "", "wrote_json": True})

    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    folder = tmp_path / "run"
    targets = ["ok:partition=a,time=5", "bad:gres=gpu:1", "lost"]
    args = ["cluster", "--executor", "slurm", "--partition", "common", "--poll", "0.01", "--output", str(folder), *TINY]
    assert main([*args, *[x for t in targets for x in ("--target", t)]]) == EXIT_FAILED
    assert [name for name, _ in submitted] == ["ok", "bad", "lost"]
    parameters = dict(submitted)
    assert parameters["ok"]["slurm_partition"] == "a" and parameters["ok"]["timeout_min"] == 5
    assert parameters["bad"]["slurm_partition"] == "common" and parameters["bad"]["slurm_gres"] == "gpu:1"
    assert "slurm_gres" not in parameters["lost"] and parameters["lost"]["timeout_min"] == cluster.DEFAULT_TIMEOUT_MIN
    record = json.loads((folder / cluster.RECORD).read_text())
    assert [(j["target"], j["state"]) for j in record["jobs"]] == [("ok", "finished"), ("bad", "failed"), ("lost", "lost")]
    assert record["report"] is None and "ok.json" in record["report_error"]


def test_jobs_that_cannot_be_submitted_are_listed_and_fail_the_run(tmp_path, capsys):
    """Slurm on a machine without it: every job fails at submission, none is dropped."""
    folder = tmp_path / "run"
    code = main(["cluster", "--executor", "slurm", "--target", "a100:partition=gpu", "--target", "h100", "--output", str(folder), *TINY])
    assert code == EXIT_FAILED
    record = json.loads((folder / cluster.RECORD).read_text())
    assert [(job["target"], job["state"]) for job in record["jobs"]] == [("a100", "failed"), ("h100", "failed")]
    assert all(job["error"].startswith("submission failed") for job in record["jobs"])
    assert record["jobs"][0]["parameters"]["slurm_partition"] == "gpu"
    assert record["report"] is None and record["report_error"] == "no job brought back a benchmark JSON"
    assert "FAILED: 2 of 2 job(s)" in capsys.readouterr().out


def test_a_local_executor_run_end_to_end_lists_the_failed_job(tmp_path, capsys):
    """Two targets through submitit's local executor: one times the tiny matrix, one asks for a
    CUDA device this machine lacks (its benchmark run times nothing and fails). One report
    from what came back, both jobs in it and in the run record, exit status 1."""
    folder = tmp_path / "run"
    code = main(["cluster", "--target", "cpu-box", "--target", "gpu-box:device=cuda", "--parallel", "2", "--poll", "0.5",
                 "--output", str(folder), *TINY])  # fmt: skip
    out = capsys.readouterr().out
    assert code == EXIT_FAILED, out
    record = json.loads((folder / cluster.RECORD).read_text())
    jobs = {job["target"]: job for job in record["jobs"]}
    assert jobs["cpu-box"]["state"] == "finished" and jobs["cpu-box"]["returncode"] == 0
    assert jobs["gpu-box"]["state"] == "failed" and jobs["gpu-box"]["returncode"] != 0
    assert "deselected" in jobs["gpu-box"]["error"]  # its pytest summary: nothing ran on a machine without CUDA
    assert record["matrix"]["computations"] == ["torch_roll"] and record["report"] == "report.md"

    run = json.loads((folder / jobs["cpu-box"]["run"]).read_text())
    assert [b["name"] for b in run["benchmarks"]] == ["test_throughput[torch_roll-cpu-sweep_big_kernel-M7]"]
    assert run["sw"]["failures"] == []
    assert (folder / "logs" / "gpu-box.log").read_text().strip()

    report = (folder / "report.md").read_text()
    assert "Cluster jobs" in report and "1 of 2 finished and passed" in report
    assert re.search(r"\| gpu-box \|.*\| failed \|", report) and re.search(r"\| cpu-box \|.*\| finished \|", report)
    assert "torch_roll" in report
    assert "FAILED: 1 of 2 job(s) did not finish and pass: gpu-box (failed)" in out
