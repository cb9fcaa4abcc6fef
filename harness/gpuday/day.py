"""The GPU day's driver: each phase in its own process under its own budget, its status recorded.

A phase is ``python -m harness.gpuday.phases NAME``; it writes its results to a scratch JSON
as it goes, so a phase stopped at its budget still leaves what it finished. At the budget the
phase gets SIGINT (pytest then still writes its benchmark JSON) and, ``GRACE_S`` later, SIGKILL.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.files import write_text_atomically

#: Seconds between the SIGINT at a phase's budget and the SIGKILL.
GRACE_S = 5
#: What a lent GPU machine brings back from $OUT: at most this many files.
MAX_FILES = 8
SUMMARY, LOG = "gpu-day.json", "gpu-day.log"
PASSED, FAILED, TIMED_OUT, SKIPPED = "passed", "failed", "timed out", "skipped"


@dataclass(frozen=True)
class Phase:
    name: str
    #: Wall-clock budget on the GPU machine (the whole day's sum fits the 8-minute target).
    budget_s: int
    #: Budget in a dry run on a small CPU box (the sum fits 5 minutes).
    dry_budget_s: int
    what: str


PHASES = (
    Phase("env", 40, 15, "GPU, SMs, clocks, driver and library versions, PTX ISA emitted and accepted, copy and FP32 GEMM ceilings"),
    Phase("correctness", 110, 65, "every CUDA implementation on SW-tiny/SW-small stage shapes, B=1/64, fp32/fp64, exact and float; the network path; swbench check"),
    Phase("sanitizers", 45, 25, "compute-sanitizer memcheck, racecheck, synccheck, initcheck on every CUDA implementation's kernels, caching allocator off"),
    Phase("timing", 100, 35, "implementations and peers on the SW-tiny stages at B=64/128, CUDA events, cold L2, graph replay, host time per call"),
    Phase("peers", 40, 25, "what a GPU user would pick, cudnn.benchmark on: merged convs NCHW and channels_last, the deployed "
                           "merged form, torch.compile default and max-autotune, FP16/BF16 rows (lower precision, context)"),
    Phase("counters", 45, 30, "ncu: DRAM bytes, occupancy, bank conflicts, pipe utilisation, stalls, beside the static estimates"),
    Phase("networks", 60, 65, "Table 7 on the GPU: SW-tiny with each GPU implementation, SW-tiny Rep, UniRepLKNet-T, SLaK-T (Rep) at B=64/128"),
    Phase("report", 40, 40, "the markdown report from the runs (where its libraries are present)"),
)
PHASE_NAMES = tuple(phase.name for phase in PHASES)


def default_output() -> Path:
    """``$OUT`` when set (a lent GPU machine's folder that comes back), else a new folder under reports/."""
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(__file__).resolve().parents[2] / "reports" / "gpu-day" / stamp


def _write_summary(output: Path, day: dict) -> None:
    write_text_atomically(output / SUMMARY, json.dumps(day, indent=1, default=str) + "\n")


def _run_phase(phase: Phase, output: Path, scratch: Path, dry_run: bool, python: str, log: Callable[[str], None]) -> dict:
    budget = phase.dry_budget_s if dry_run else phase.budget_s
    command = [python, "-m", "harness.gpuday.phases", phase.name, "--output", str(output), "--scratch", str(scratch),
               "--budget", str(budget - 2 * GRACE_S)] + (["--dry-run"] if dry_run else [])  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if dry_run:  # numba_shared runs on the CPU only in Numba's simulator, fixed before numba is imported
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    phase_log = scratch / f"{phase.name}.log"
    started = time.monotonic()
    with phase_log.open("w") as sink:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            process.wait(timeout=budget - GRACE_S)  # the phase was told to end GRACE_S earlier still
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    seconds = time.monotonic() - started
    text = phase_log.read_text(errors="replace")
    log(f"===== phase {phase.name} ({seconds:.1f} s, rc {process.returncode}): {shlex.join(command)}\n{text}\n")
    result_file = scratch / f"{phase.name}.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    status = result.get("status")
    if timed_out:
        status = TIMED_OUT
    elif process.returncode != 0 and status in (None, PASSED):
        status = FAILED
    elif status is None:
        status = FAILED
        result["summary"] = "the phase exited without recording a result"
    return {
        "name": phase.name, "status": status, "seconds": round(seconds, 1), "budget_s": budget,
        "returncode": process.returncode, "command": shlex.join(command),
        "summary": result.get("summary", f"no summary; log tail: {text[-400:]}"),
        "results": result.get("results"), "what": phase.what,
    }  # fmt: skip


def run_day(output: Path, *, dry_run: bool, phases: Sequence[str] | None = None, python: str = sys.executable,
            echo: Callable[[str], None] = print) -> int:  # fmt: skip
    """Run the selected phases (default: all) into ``output``, which must be empty or new.
    Returns 0 when every phase passed, 1 when one failed or ran out of time, 3 when none ran."""
    selected = [phase for phase in PHASES if phases is None or phase.name in phases]
    if phases is not None and (unknown := sorted(set(phases) - set(PHASE_NAMES))):
        raise ValueError(f"unknown phase(s) {unknown}; the phases are {', '.join(PHASE_NAMES)}")
    output.mkdir(parents=True, exist_ok=True)
    if any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty: the GPU day writes into a new or empty folder (nothing is overwritten)")
    day = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "dry_run": dry_run,
        "command": shlex.join(sys.argv), "python": python,
        "budget_s": sum(p.dry_budget_s if dry_run else p.budget_s for p in selected), "phases": [],
    }  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu-day-") as scratch, (output / LOG).open("w") as log_file:

        def log(text: str) -> None:
            log_file.write(text)
            log_file.flush()

        for phase in selected:
            echo(f"[gpu day] {phase.name}: {phase.what} (budget {phase.dry_budget_s if dry_run else phase.budget_s} s)")
            record = _run_phase(phase, output, Path(scratch), dry_run, python, log)
            day["phases"].append(record)
            day["seconds"] = round(time.monotonic() - started, 1)
            _write_summary(output, day)
            echo(f"[gpu day] {phase.name}: {record['status']} in {record['seconds']} s: {record['summary']}")
    statuses = [record["status"] for record in day["phases"]]
    echo(f"[gpu day] {len(statuses)} phases in {day['seconds']} s: " + ", ".join(f"{r['name']} {r['status']}" for r in day["phases"]))
    echo(f"[gpu day] everything is under {output}")
    if not statuses or all(status == SKIPPED for status in statuses):
        return 3
    return 0 if all(status in (PASSED, SKIPPED) for status in statuses) else 1


def summary_markdown(day: dict) -> str:
    """The day as markdown without a table library (the GPU machine has no tabulate)."""
    lines = [f"## The GPU day{' (dry run on the CPU)' if day.get('dry_run') else ''}", "",
             f"Started {day.get('started')}, {day.get('seconds')} s in all (budget {day.get('budget_s')} s). "
             f"Command: `{day.get('command')}`.", ""]  # fmt: skip
    for record in day.get("phases", []):
        lines.append(f"- **{record['name']}**: {record['status']} in {record['seconds']} s (budget {record['budget_s']} s): {record['summary']}")
    return "\n".join(lines) + "\n"


__all__ = ["PHASES", "Phase", "default_output", "run_day", "summary_markdown"]
