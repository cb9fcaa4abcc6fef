"""Benchmark runs across machines through submitit (``swbench cluster``).

The benchmark matrix (a tier, suites, implementations, cases) goes to one job per target: a
machine or GPU type (a Slurm partition, gres or constraint), or this workstation through
submitit's local executor. Each job runs on its machine the same pytest benchmark run as
``make bench`` and writes its own new JSON; the jobs are collected as they finish (submitit's
``job.done()`` polled, then ``job.result()``), and one report across machines is rendered from
every JSON that came back by ``harness.report`` (which merges runs). A failed or lost job is
listed in the report and in the run record (``cluster.json``), never dropped, and fails the run.

Everything of a run goes into one new folder: ``cluster.json``, ``runs/TARGET.json``,
``logs/TARGET.log`` (each job's pytest output), ``submitit/`` (submitit's pickles and logs),
``report.md`` with its plots. On a cluster the checkout and that folder must be on a file system
the nodes share (as submitit itself needs), and the job runs the Python that submitted it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.files import write_text_atomically

ROOT = Path(__file__).resolve().parent.parent
EXECUTORS = ("local", "slurm")
#: make bench's timing options (the Makefile's BENCH_ARGS; a test keeps the two equal).
BENCH_ARGS = ("--benchmark-max-time=0.5", "--benchmark-min-rounds=3")
#: The benchmark tests (layers, networks): named on the command line so that the run collects
#: only them (make bench collects every test and deselects all but these; a test keeps the list true).
BENCH_FILES = ("tests/test_benchmarks.py", "tests/test_model_benchmarks.py", "tests/test_training_benchmarks.py")
#: A target's short keys -> submitit (AutoExecutor) parameters; any other key is passed as is.
TARGET_KEYS = {
    "partition": "slurm_partition", "gres": "slurm_gres", "constraint": "slurm_constraint",
    "account": "slurm_account", "qos": "slurm_qos", "time": "timeout_min", "cpus": "cpus_per_task",
    "gpus": "gpus_per_node", "mem": "mem_gb",
}  # fmt: skip
#: The one target key about the benchmark run itself: pytest's --bench-device.
DEVICE_KEY = "device"
DEVICES = ("all", "cpu", "cuda")
#: Minutes a job may run (submitit's timeout_min) unless a target says otherwise.
DEFAULT_TIMEOUT_MIN = 60
RECORD = "cluster.json"
#: A job's states: pending and running until it is collected, then one of the last four.
PENDING, RUNNING, FINISHED, FAILED, LOST, CANCELLED = "pending", "running", "finished", "failed", "lost", "cancelled"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Target:
    """One machine or GPU type: a job's name (its files' names) and its executor parameters."""

    name: str
    #: submitit parameters of its job (``slurm_partition``, ``timeout_min``, ...)
    parameters: Mapping[str, object] = field(default_factory=dict)
    #: pytest's ``--bench-device`` on it: all (those present), cpu or cuda
    device: str = "all"

    @classmethod
    def parse(cls, text: str) -> Target:
        """``NAME[:KEY=VALUE,...]``, e.g. ``h100:partition=gpu,gres=gpu:h100:1,device=cuda``."""
        name, _, rest = text.partition(":")
        if not _NAME.fullmatch(name):
            raise ValueError(f"target {text!r}: the name must be letters, digits, '_', '.' or '-' (it names the job's files)")
        parameters: dict[str, object] = {}
        device = "all"
        for item in filter(None, rest.split(",")):
            key, equals, value = item.partition("=")
            if not equals or not key or not value:
                raise ValueError(f"target {text!r}: expected KEY=VALUE after the name, got {item!r}")
            if key == DEVICE_KEY:
                if value not in DEVICES:
                    raise ValueError(f"target {text!r}: device must be one of {', '.join(DEVICES)}, got {value!r}")
                device = value
            else:
                parameter = TARGET_KEYS.get(key, key)
                if parameter not in executor_parameters():
                    raise ValueError(f"target {text!r}: unknown key {key!r}; expected {DEVICE_KEY}, one of "
                                     f"{', '.join(TARGET_KEYS)} or a submitit parameter (timeout_min, slurm_..., local_...)")  # fmt: skip
                parameters[parameter] = parse_value(value)
        return cls(name, parameters, device)


def executor_parameters() -> frozenset[str]:
    """Every parameter submitit's AutoExecutor takes: its shared ones and each executor's own
    with the executor's prefix (what ``update_parameters`` would accept at submission)."""
    from submitit.auto.auto import AutoExecutor
    from submitit.local.local import LocalExecutor
    from submitit.slurm.slurm import SlurmExecutor

    shared = AutoExecutor._valid_parameters()
    own = {f"{prefix}_{name}" for prefix, executor in (("slurm", SlurmExecutor), ("local", LocalExecutor))
           for name in executor._valid_parameters()}  # fmt: skip
    return frozenset(shared | own)


def parse_value(text: str) -> object:
    """A parameter's value: an int or a float where it reads as one (submitit checks types)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class Matrix:
    """What every job benchmarks: the tier, and optionally suites, computations and cases."""

    tier: str = "quick"
    suites: tuple[str, ...] = ()
    #: implementations (or peers) to time; empty: every one, as make bench does
    computations: tuple[str, ...] = ()
    #: (suite, case name) pairs; empty: every case of the suites in the tier
    cases: tuple[tuple[str, str], ...] = ()
    bench_args: tuple[str, ...] = BENCH_ARGS

    def selection(self) -> str | None:
        """pytest's ``-k`` expression for the chosen computations and cases (test ids are
        ``COMPUTATION-DEVICE-SUITE-CASE``), or None for everything."""
        parts = []
        if self.computations:
            parts.append(" or ".join(f"[{name}-" for name in self.computations))
        if self.cases:
            from harness.cases import load_suites  # network benchmarks' ids: COMPUTATION-DEVICE-CASE

            networks = {found.name for found in load_suites() if found.models}
            parts.append(" or ".join(f"-{case}]" if suite in networks else f"-{suite}-{case}]" for suite, case in self.cases))
        return " and ".join(f"({part})" for part in parts) or None

    def pytest_args(self, device: str, output: Path) -> list[str]:
        args = [*BENCH_FILES, "--benchmark-only", "--tier", self.tier, *[f"--suite={suite}" for suite in self.suites]]
        args += ["--bench-device", device, f"--benchmark-json={output}", *self.bench_args]
        selection = self.selection()
        return args + (["-k", selection] if selection else [])


@dataclass(frozen=True)
class JobSpec:
    """What one job runs on its machine (pickled by submitit)."""

    target: Target
    matrix: Matrix
    #: the new JSON file it writes
    output: Path
    log: Path
    #: $SW_IMPLS_DIR for the run, when not the project's impls/
    impls_dir: str | None = None


def run_job(job: JobSpec) -> dict:
    """On the target machine: ``pytest --benchmark-only ...`` in the checkout, its output in
    the job's log. Never replaces a file (a requeued job that finished once fails here)."""
    if job.output.exists():
        raise FileExistsError(f"{job.output} exists: a job never replaces a run")
    command = [sys.executable, "-m", "pytest", *job.matrix.pytest_args(job.target.device, job.output), "-p", "no:cacheprovider"]
    env = dict(os.environ)
    if job.impls_dir:
        env["SW_IMPLS_DIR"] = job.impls_dir
    started = time.monotonic()
    for folder in (job.log.parent, job.output.parent):  # pytest-benchmark writes into an existing folder only
        folder.mkdir(parents=True, exist_ok=True)
    with open(job.log, "x") as log:
        returncode = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    return {
        "returncode": returncode,
        "host": socket.gethostname(),
        "seconds": round(time.monotonic() - started, 1),
        "command": shlex.join(command),
        "wrote_json": job.output.exists(),
    }


@dataclass
class JobRecord:
    """A job in the run record: where it ran, how it ended, and its files."""

    target: str
    parameters: dict
    device: str
    state: str = PENDING
    job_id: str | None = None
    #: its benchmark JSON, relative to the run's folder, when one came back
    run: str | None = None
    returncode: int | None = None
    host: str | None = None
    seconds: float | None = None
    #: why it failed or was lost
    error: str | None = None
    log: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == FINISHED


def job_outcome(record: JobRecord, job, folder: Path, spec: JobSpec) -> None:
    """Fill ``record`` from a done submitit job: finished (the benchmark run passed), failed
    (the run failed, or the job raised) or lost (no result: killed, preempted, out of time)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    if spec.output.exists():
        record.run = str(spec.output.relative_to(folder))
    try:
        result = job.result()
    except FailedJobError as error:  # the job function raised on its machine (a subclass of the next)
        record.state, record.error = FAILED, f"the job raised {_raised(str(error))}"
        return
    except UncompletedJobError as error:
        record.state, record.error = LOST, f"no result (state {job.state}): {_first_lines(str(error))}"
        return
    except Exception as error:  # its result could not be read back (a truncated pickle, ...)
        record.state, record.error = LOST, f"its result could not be read: {type(error).__name__}: {_first_lines(str(error), 4)}"
        return
    record.returncode, record.host, record.seconds = result["returncode"], result["host"], result["seconds"]
    if result["returncode"] != 0:
        record.state = FAILED
        last = _last_line(spec.log)
        record.error = f"the benchmark run exited with status {result['returncode']}{f': {last}' if last else ''} (its output: {record.log})"
    elif record.run is None:
        record.state, record.error = FAILED, f"the benchmark run wrote no JSON (its output: {record.log})"
    else:
        record.state = FINISHED


def _last_line(log: Path) -> str | None:
    """The last line of a job's pytest output (its summary: what passed, failed or ran at all)."""
    try:
        lines = [line.strip(" =") for line in log.read_text(errors="replace").splitlines() if line.strip(" =")]
    except OSError:
        return None
    return lines[-1] if lines else None


def _raised(text: str) -> str:
    """The exception at the end of the trace in a FailedJobError's message (the whole trace is in
    submitit's log of the job)."""
    parts = [part.strip() for part in re.split(r"^-{10,}$", text, flags=re.M)]
    trace = parts[1] if len(parts) >= 3 else text.strip()
    lines = [line for line in trace.splitlines() if line.strip()]
    return lines[-1] if lines else "(no trace)"


def _first_lines(text: str, lines: int = 12) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[:lines] + (["..."] if len(kept) > lines else []))


def default_output(tier: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return ROOT / "reports" / "cluster" / f"{tier}-{stamp}"


def new_folder(folder: Path) -> Path:
    """The run's folder: new, or an empty one (an earlier run's files are never touched)."""
    folder = folder.resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"--output: {folder} exists and is not an empty folder; a run never writes over another")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class ClusterRun:
    """One ``swbench cluster`` run: its jobs and where everything goes."""

    folder: Path
    executor: str
    matrix: Matrix
    targets: Sequence[Target]
    impls_dir: str | None = None
    #: jobs at once (the local executor's default 1: jobs sharing a machine would time each other)
    parallel: int | None = None
    poll_seconds: float = 5.0
    command: str = ""
    echo: Callable[[str], None] = print
    records: list[JobRecord] = field(default_factory=list)
    started: str = ""

    def record(self, report: str | None = None, report_error: str | None = None) -> dict:
        return {
            "kind": "swbench cluster",
            "command": self.command,
            "executor": self.executor,
            "matrix": dataclasses.asdict(self.matrix),
            "impls_dir": self.impls_dir,
            "started": self.started,
            "jobs": [dataclasses.asdict(r) for r in self.records],
            "report": report,
            "report_error": report_error,
        }

    def write_record(self, **report) -> None:
        # This run's own record, rewritten as jobs finish; its folder is new, so nothing else is replaced.
        write_text_atomically(self.folder / RECORD, json.dumps(self.record(**report), indent=2) + "\n")

    def run(self) -> int:
        """Submit, collect, report; the exit code (0 only if every job finished and passed)."""
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        specs = [
            JobSpec(t, self.matrix, self.folder / "runs" / f"{t.name}.json", self.folder / "logs" / f"{t.name}.log", self.impls_dir)
            for t in self.targets
        ]
        self.records = [
            JobRecord(t.name, dict(t.parameters), t.device, log=str(s.log.relative_to(self.folder))) for t, s in zip(self.targets, specs)
        ]
        self.write_record()
        try:
            self._executor()
        except Exception as error:  # e.g. Slurm asked for where there is no srun: every job fails, listed
            for record in self.records:
                record.state, record.error = FAILED, f"submission failed: {type(error).__name__}: {_first_lines(str(error), 4)}"
                self.echo(_line(record))
            return self._report()
        waiting = list(zip(self.records, specs))
        running: list[tuple[JobRecord, JobSpec, object]] = []
        parallel = self.parallel or (1 if self.executor == "local" else len(specs))
        try:
            while waiting or running:
                while waiting and len(running) < parallel:
                    record, spec = waiting.pop(0)
                    job = self._submit(record, spec)
                    if job is not None:
                        running.append((record, spec, job))
                    self.write_record()
                for entry in list(running):
                    record, spec, job = entry
                    if job.done():
                        running.remove(entry)
                        job_outcome(record, job, self.folder, spec)
                        self.echo(_line(record))
                        self.write_record()
                    elif record.state == PENDING and _is_running(job):
                        record.state = RUNNING
                        self.write_record()
                if running:
                    time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            for record, _, job in running:
                job.cancel(check=False)
                record.state, record.error = CANCELLED, "cancelled: the run was interrupted (Ctrl-C)"
            for record, _ in waiting:
                record.state, record.error = CANCELLED, "never submitted: the run was interrupted (Ctrl-C)"
            self.write_record()
            raise
        return self._report()

    def _executor(self):
        import submitit

        return submitit.AutoExecutor(folder=self.folder / "submitit", cluster=self.executor)

    def _submit(self, record: JobRecord, spec: JobSpec):
        parameters = {"name": f"swbench-{spec.target.name}", "timeout_min": DEFAULT_TIMEOUT_MIN}
        if self.executor == "local":
            parameters["gpus_per_node"] = _local_gpus()  # else the local executor hides every GPU
        parameters.update(spec.target.parameters)
        try:
            executor = self._executor()  # a fresh one per job: parameters never leak from one target to the next
            executor.update_parameters(**parameters)
            job = executor.submit(run_job, spec)
        except Exception as error:  # sbatch missing or refusing, an unknown parameter: this job fails, the others go on
            record.state, record.error = FAILED, f"submission failed: {type(error).__name__}: {_first_lines(str(error), 4)}"
            self.echo(_line(record))
            return None
        record.job_id = str(job.job_id)
        self.echo(f"submitted {spec.target.name}: job {job.job_id} ({self.executor})")
        return job

    def _report(self) -> int:
        runs = [self.folder / r.run for r in self.records if r.run]
        bad = [r for r in self.records if not r.ok]
        report, report_error = None, None
        if runs:
            from harness.report import write_report  # pandas and matplotlib: only when reporting

            try:
                write_report(runs, self.folder / "report.md", notes=jobs_markdown(self.records))
                report = "report.md"
                self.echo(f"wrote {self.folder / 'report.md'} ({len(runs)} run(s))")
            except (ValueError, OSError) as error:
                report_error = f"{type(error).__name__}: {error}"
                self.echo(f"cannot write the report: {report_error}")
        else:
            report_error = "no job brought back a benchmark JSON"
            self.echo(f"no report: {report_error}")
        self.write_record(report=report, report_error=report_error)
        self.echo(f"run record: {self.folder / RECORD}")
        if bad or report_error:
            listed = ", ".join(f"{r.target} ({r.state})" for r in bad) or "every job finished"
            self.echo(f"FAILED: {len(bad)} of {len(self.records)} job(s) did not finish and pass: {listed}"
                      + (f"; {report_error}" if report_error else ""))  # fmt: skip
            return 1
        self.echo(f"PASSED: {len(self.records)} job(s)")
        return 0


def _is_running(job) -> bool:
    try:
        return str(job.state).upper() == "RUNNING"
    except Exception:  # the scheduler's state could not be read this time: ask again at the next poll
        return False


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _line(record: JobRecord) -> str:
    where = f" on {record.host}" if record.host else ""
    took = f" in {record.seconds:.0f} s" if record.seconds is not None else ""
    why = f": {record.error.splitlines()[0]}" if record.error else ""
    return f"{record.target}: {record.state}{where}{took}{why}"


def jobs_markdown(records: Sequence[JobRecord]) -> str:
    """The jobs as a markdown table for the report (every job, whatever became of it)."""

    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        return " ".join(text.split()).replace("|", "\\|")

    lines = [
        f"Cluster jobs (`swbench cluster`; the run record is `{RECORD}`): "
        f"{sum(r.ok for r in records)} of {len(records)} finished and passed.",
        "",
        "| target | parameters | device | job | state | host | exit status | run | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        parameters = ", ".join(f"{k}={v}" for k, v in sorted(r.parameters.items()))
        row = (r.target, parameters, r.device, r.job_id, r.state, r.host, r.returncode, r.run and f"`{r.run}`", r.error)
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def plan(
    tier: str = "quick",
    suites: Sequence[str] | None = None,
    computations: Sequence[str] | None = None,
    cases: Sequence[str] | None = None,
    bench_args: Sequence[str] | None = None,
    impls_dir: str | None = None,
) -> Matrix:
    """The matrix, every name checked here before anything is submitted (ValueError: one line
    naming the option)."""
    from harness.cases import TIERS, Tier, load_cases
    from harness.models.bench import load_model_cases
    from harness.models.training import PYTORCH_WAYS
    from harness.peers import peers
    from harness.registry import discover

    if tier not in TIERS:
        raise ValueError(f"--tier: expected one of {', '.join(TIERS)}, got {tier!r}")
    chosen = list(dict.fromkeys(suites)) if suites else None
    try:
        layer_cases = [case for case in load_cases(suites=chosen) if Tier.parse(tier).includes(case.tier)]
    except ValueError as error:
        raise ValueError(f"--suite: {error}") from None
    model_cases = [case for case in load_model_cases(suites=chosen, measures=None) if Tier.parse(tier).includes(case.tier)]
    if not layer_cases and not model_cases:
        raise ValueError(f"--suite: no case of the {tier} tier in {', '.join(chosen or ['cases/'])}")
    known = sorted({*discover(impls_dir).implementations, *peers(), *PYTORCH_WAYS})
    unknown = sorted(set(computations or ()) - set(known))
    if unknown:
        raise ValueError(f"--impl: unknown implementation(s) or peer(s) {unknown}; known: {known}")
    pairs = []
    for name in dict.fromkeys(cases or ()):
        found = [(c.suite, c.name) for c in [*layer_cases, *model_cases] if c.name == name]
        if not found:
            raise ValueError(f"--case: no case {name!r} of the {tier} tier in {', '.join(chosen or ['cases/'])}")
        pairs += found
    return Matrix(tier, tuple(chosen or ()), tuple(dict.fromkeys(computations or ())), tuple(pairs),
                  tuple(BENCH_ARGS if bench_args is None else bench_args))  # fmt: skip
