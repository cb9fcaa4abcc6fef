"""pytest plugin for the benchmarks (``pytest --benchmark-only``), loaded by the root conftest.

Command-line options select what is timed (``--suite``, ``--tier``, ``--bench-device``,
``--bench-dtype``) and the roofline's peaks (``--peak-gflops``, ``--peak-gbps`` override the
probes). Tests taking ``computation``, ``bench_device`` and ``bench_case`` run once per
selected case for every implementation and peer that can be timed here; one that cannot is
one skipped test naming the reason, and is listed under ``sw.not_run`` in the JSON.
Failures are listed under ``sw.failures``; the run goes on.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import pytest
import torch

from harness import machine
from harness.bench import Session, computations
from harness.cases import TIERS, in_tier, load_cases, suite_descriptions
from harness.cudac.kernel_table import kernel_table
from harness.registry import discover

_SESSION = pytest.StashKey[Session]()
_INTERRUPTED = pytest.StashKey[bool]()
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Marks the one placeholder item of a run that does not benchmark (deselected, never reported).
_NOT_BENCHMARKING = "sw_not_benchmarking"


def _positive_number(text: str) -> float:
    """A peak given on the command line: checked when the options are read, before any work."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sw benchmarks", "SW operator benchmarks (pytest --benchmark-only)")
    group.addoption("--suite", action="append", default=None, metavar="NAME",
                    help="benchmark the cases of this suite (a cases/NAME.toml); repeatable; default: every suite")  # fmt: skip
    group.addoption("--tier", choices=TIERS, default="quick",
                    help="quick: minutes on a small CPU box; full: adds throughput batches and more layers")  # fmt: skip
    group.addoption("--bench-device", choices=("cpu", "cuda", "all"), default="all",
                    help="devices to time on (default all: those present; the others are listed as not run)")  # fmt: skip
    group.addoption("--bench-dtype", choices=tuple(DTYPES), default="float32")
    group.addoption("--peak-gflops", type=_positive_number, default=None, metavar="GFLOPS",
                    help="FP32 peak for the roofline instead of the matmul probe (applies to every device timed)")  # fmt: skip
    group.addoption("--peak-gbps", type=_positive_number, default=None, metavar="GBPS",
                    help="memory bandwidth for the roofline instead of the copy probe")  # fmt: skip
    group.addoption("--l2-flush", action="store_true", default=False,
                    help="on a GPU, overwrite a buffer larger than L2 before every round, outside the timed region (cold L2)")  # fmt: skip
    group.addoption("--no-kernel-table", action="store_true", default=False,
                    help="leave the GPU kernels listing out of the JSON (NVRTC builds of every kernel; the GPU day makes it once)")  # fmt: skip
    group.addoption("--gpu-graph", action="store_true", default=False,
                    help="on a GPU, also time replays of the work captured once in a CUDA graph (harness.gputime)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{_NOT_BENCHMARKING}: placeholder of a benchmark test in a run without --benchmark-only")
    config.stash[_SESSION] = Session(
        dtype=DTYPES[config.getoption("bench_dtype")],
        peak_gflops=config.getoption("peak_gflops"),
        peak_gbps=config.getoption("peak_gbps"),
        l2_flush=config.getoption("l2_flush"),
        gpu_graph=config.getoption("gpu_graph"),
    )


def _benchmarking(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_only", False))


def _devices(config: pytest.Config) -> tuple[str, ...]:
    chosen = config.getoption("bench_device")
    return ("cpu", "cuda") if chosen == "all" else (chosen,)


@pytest.fixture
def bench_session(request: pytest.FixtureRequest) -> Session:
    """The run's ``harness.bench.Session``: ``bench_session.measure(benchmark, computation, case, device)``."""
    return request.config.stash[_SESSION]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = ("computation", "bench_device", "bench_case")
    if not all(name in metafunc.fixturenames for name in names):
        return
    config = metafunc.config
    if not _benchmarking(config):  # a plain test run: one placeholder, deselected below
        metafunc.parametrize(names, [pytest.param(None, None, None, marks=getattr(pytest.mark, _NOT_BENCHMARKING))])
        return
    session = config.stash[_SESSION]
    tier = config.getoption("tier")
    session.cases = [case for case in load_cases(suites=config.getoption("suite")) if in_tier(case, tier)]
    params = []
    for computation in computations():
        for device in _devices(config):
            if device not in computation.devices:
                continue
            reason = computation.not_benchmarked_reason(device, tier)
            if reason is not None:
                session.skip(computation, device, reason)
                mark = pytest.mark.skip(reason=f"{computation.name} on {device} not timed: {reason}")
                params.append(pytest.param(computation, device, None, id=f"{computation.name}-{device}", marks=mark))
                continue
            params += [
                pytest.param(computation, device, case, id=f"{computation.name}-{device}-{case.suite}-{case.name}")
                for case in session.cases
            ]
    metafunc.parametrize(names, params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks and tests never share a run: a plain run deselects the benchmark placeholder,
    ``--benchmark-only`` deselects every test that is not a benchmark (instead of listing each
    as skipped)."""
    benchmarking = _benchmarking(config)
    keep, drop = [], []
    for item in items:
        is_benchmark = "benchmark" in getattr(item, "fixturenames", ())
        placeholder = item.get_closest_marker(_NOT_BENCHMARKING) is not None
        (drop if placeholder or (benchmarking and not is_benchmark) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    session = config.stash[_SESSION]
    cpu, gpu = machine.cpu_info(), machine.gpu_info()
    if gpu is not None and "cuda" in _devices(config):
        gpu["peaks"] = session.peaks("cuda").as_dict()
    machine_info["sw"] = {
        "fingerprint": machine.fingerprint(cpu, gpu),
        "cpu": cpu,
        "gpu": gpu,
        "peaks": session.peaks("cpu").as_dict(),
        "software": machine.software_versions(),
    }


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    session = config.stash[_SESSION]
    if config.getoption("no_kernel_table"):
        kernels, kernel_errors = None, {}  # left out (--no-kernel-table): not an error
    else:
        kernels, kernel_errors = kernel_table([c.implementation for c in computations() if c.implementation])
    output_json["sw"] = {
        "tier": config.getoption("tier"),
        "suites": sorted({case.suite for case in session.cases}),
        "suite_descriptions": {k: v for k, v in suite_descriptions().items() if k in {c.suite for c in session.cases}},
        "dtype": config.getoption("bench_dtype"),
        "command": shlex.join(["pytest", *sys.argv[1:]]),
        "failures": session.failures,
        "not_run": session.not_run,
        "kernels": kernels.to_dict("records") if kernels is not None else [],
        "kernel_errors": kernel_errors,
        "load_errors": {file: error.splitlines()[0] for file, error in discover().errors.items()},
        "interrupted": bool(config.stash.get(_INTERRUPTED, False)),
    }


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """Around pytest-benchmark's own (which writes ``--benchmark-json``): the JSON goes to a
    temporary name beside the target and is moved into place only when the run completed; an
    interrupted run is marked ``sw.interrupted`` and, if an earlier file is there, kept beside
    it as ``NAME.interrupted.json``. A benchmark run that timed nothing is not a pass."""
    config = session.config
    writer = getattr(config, "_benchmarksession", None)  # pytest-benchmark's session (no public handle)
    target = Path(writer.json) if writer is not None and writer.json else None
    config.stash[_INTERRUPTED] = exitstatus == pytest.ExitCode.INTERRUPTED
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp") if target else None
    if temporary is not None:
        writer.json = temporary
    yield
    if temporary is not None:
        writer.json = target
        if temporary.exists():
            if config.stash[_INTERRUPTED] and target.exists():
                kept = target.with_name(f"{target.stem}.interrupted{target.suffix}")
                os.replace(temporary, kept)
                print(f"\ninterrupted: the partial run went to {kept}; {target} (an earlier run) is unchanged", file=sys.stderr)
            else:
                os.replace(temporary, target)
    if _benchmarking(config) and writer is not None and not writer.benchmarks and session.exitstatus == pytest.ExitCode.OK:
        print("\nnothing was benchmarked (every item skipped, deselected or failed): exit 5, no JSON written", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
