"""The checking mode of the host emulation: sanitized host builds run in a child process.

``harness.cudac.sanitizer_runtime`` says what the builds are and how a report becomes a
``SanitizerError``; this module starts the Python process they need (the sanitizer's runtime
preloaded) and is its command line, which is also the reproducer a failing check prints::

    python -m harness.cudac.sanitizers thread check --impl cupy_fused --case 'name=... batch=2 ...'
    python -m harness.cudac.sanitizers address run path/to/script.py [args...]

``check`` runs ``harness.checking.check`` for each (implementation, case) and prints one
``SWEMU-RESULT {json}`` line per check; ``run`` runs a script. The process's exit status is the
sanitizer's (66 for TSan, 1 for ASan) once it reported anything: read the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.cudac.sanitizer_runtime import (
    ENVIRONMENT,
    SANITIZERS,
    SanitizerError,
    SanitizerReport,
    environment,
    launches,
    parse_reports,
    runtime_loaded,
    unavailable_reason,
)

__all__ = ["SANITIZERS", "Child", "SanitizerError", "SanitizerReport", "parse_reports", "reproducer", "results",
           "run_checks", "run_child", "start_child", "unavailable_reason"]  # fmt: skip

#: A line of the ``check`` command's output that carries one result as JSON.
RESULT_PREFIX = "SWEMU-RESULT "


class Child:
    """A running ``python -m harness.cudac.sanitizers NAME ARGUMENTS...`` (see ``start_child``)."""

    def __init__(self, name: str, arguments: list[str], cwd: str | os.PathLike | None = None):
        self.folder = tempfile.TemporaryDirectory(prefix=f"swemu-{name}-")
        folder = Path(self.folder.name)
        env = environment(name, folder / "report")
        command = [sys.executable, "-m", "harness.cudac.sanitizers", name, *arguments]
        self._stdout, self._stderr = (open(folder / stream, "w+") for stream in ("stdout", "stderr"))
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._stdout, stderr=self._stderr, text=True)
        self._done: subprocess.CompletedProcess | None = None

    def result(self, timeout: float) -> subprocess.CompletedProcess:
        """Wait for it (killed after ``timeout`` seconds); its exit status and output."""
        if self._done is None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for stream in (self._stdout, self._stderr):
                stream.seek(0)
            self._done = subprocess.CompletedProcess(
                self.process.args, self.process.returncode, self._stdout.read(), self._stderr.read()
            )
            for stream in (self._stdout, self._stderr):
                stream.close()
            self.folder.cleanup()
        return self._done


def start_child(name: str, arguments: list[str], *, cwd: str | os.PathLike | None = None) -> Child:
    """Start a sanitized child process running ``arguments`` (``check ...`` or ``run ...``).
    Its exit status is the sanitizer's (66 for TSan, 1 for ASan) once it reported anything:
    read its results."""
    return Child(name, arguments, cwd)


def run_child(name: str, arguments: list[str], *, timeout: float, cwd: str | os.PathLike | None = None):
    """``start_child`` and wait for it; the CompletedProcess (stdout, stderr as text)."""
    return start_child(name, arguments, cwd=cwd).result(timeout)


def results(stdout: str) -> list[dict]:
    """The results a ``check`` child printed."""
    return [json.loads(line[len(RESULT_PREFIX):]) for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]


def reproducer(name: str, impl: str, case_args: str) -> str:
    return f"python -m harness.cudac.sanitizers {name} check --impl {impl} --case {shlex.quote(case_args)}"


def run_checks(name: str, pairs: list[tuple[str, str]]) -> int:
    """In the sanitized process: check each (implementation, case string), printing one
    ``SWEMU-RESULT`` line per check (and the report of a failure on stderr); 1 if any failed."""
    import torch

    import harness
    from harness.checking import CheckCase, check

    torch.set_num_threads(1)
    implementations = harness.implementations()
    failed = 0
    for impl_name, case_args in pairs:
        before, start = launches(), time.perf_counter()
        result = check(implementations[impl_name], CheckCase.parse(case_args))
        record = {
            "seconds": round(time.perf_counter() - start, 2),
            "impl": impl_name,
            "case": case_args,
            "passed": result.passed,
            "skipped": result.skipped,
            "failures": [f"[{f.kind}] {f.message}" for f in result.failures],
            "launches": launches() - before,
            "reproducer": reproducer(name, impl_name, case_args),
        }
        failed += not result.passed and not result.skipped
        print(RESULT_PREFIX + json.dumps(record), flush=True)
        if result.failures:
            print(f"{result.report()}\nReproduce with:\n  {record['reproducer']}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.cudac.sanitizers", description=__doc__.split("\n\n")[0])
    parser.add_argument("sanitizer", choices=sorted(SANITIZERS))
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check implementations on cases (CheckCase key=value strings)")
    check.add_argument("--impl", action="append", required=True, help="implementation (repeat, paired with --case)")
    check.add_argument("--case", action="append", required=True, help="case string, key=value pairs")
    run = commands.add_parser("run", help="run a Python script under the sanitizer")
    run.add_argument("script")
    run.add_argument("arguments", nargs=argparse.REMAINDER)
    argv = sys.argv[1:] if argv is None else argv
    options = parser.parse_args(argv)
    if os.environ.get(ENVIRONMENT) != options.sanitizer or not runtime_loaded(options.sanitizer):
        # Not yet under the sanitizer: start again with its runtime preloaded.
        folder = Path(tempfile.mkdtemp(prefix=f"swemu-{options.sanitizer}-"))
        env = environment(options.sanitizer, folder / "report")
        print(f"sanitizer reports (full text): {folder}/report.<pid>", file=sys.stderr)
        os.execve(sys.executable, [sys.executable, "-m", "harness.cudac.sanitizers", *argv], env)
    if options.command == "check":
        impls, cases = options.impl, options.case
        if len(impls) == 1:
            impls = impls * len(cases)
        if len(impls) != len(cases):
            parser.error("give one --impl, or one --impl per --case")
        return run_checks(options.sanitizer, list(zip(impls, cases)))
    import runpy

    sys.argv = [options.script, *options.arguments]
    runpy.run_path(options.script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
