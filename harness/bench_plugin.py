"""pytest plugin for the benchmarks (``pytest --benchmark-only``), loaded by the root conftest.

Command-line options select what is timed (``--suite``, ``--tier``, ``--bench-device``,
``--bench-dtype``) and the roofline's peaks (``--peak-gflops``, ``--peak-gbps`` override the
probes). Tests taking ``computation``, ``bench_device`` and ``bench_case`` run once per
selected case for every implementation and peer that can be timed here; one that cannot is
one skipped test naming the reason, and is listed under ``sw.not_run`` in the JSON.
Failures are listed under ``sw.failures``; the run goes on.
"""

from __future__ import annotations

import shlex
import sys

import pytest
import torch

from harness import machine
from harness.bench import Computation, computations
from harness.cases import TIERS, in_tier, load_cases
from harness.cudac.report import kernel_table

_STATE = pytest.StashKey[dict]()
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sw benchmarks", "SW operator benchmarks (pytest --benchmark-only)")
    group.addoption("--suite", action="append", default=None, metavar="NAME",
                    help="benchmark the cases of this suite (a cases/NAME.toml); repeatable; default: every suite")  # fmt: skip
    group.addoption("--tier", choices=TIERS, default="quick",
                    help="quick: minutes on a small CPU box; full: adds throughput batches and more layers")  # fmt: skip
    group.addoption("--bench-device", choices=("cpu", "cuda", "all"), default="all",
                    help="devices to time on (default all: those present; the others are listed as not run)")  # fmt: skip
    group.addoption("--bench-dtype", choices=tuple(DTYPES), default="float32")
    group.addoption("--peak-gflops", type=float, default=None, metavar="GFLOPS",
                    help="FP32 peak for the roofline instead of the matmul probe (applies to every device timed)")  # fmt: skip
    group.addoption("--peak-gbps", type=float, default=None, metavar="GBPS",
                    help="memory bandwidth for the roofline instead of the copy probe")  # fmt: skip
    group.addoption("--l2-flush", action="store_true", default=False,
                    help="on a GPU, overwrite a buffer larger than L2 before every round (cold-cache timing)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = {"failures": [], "not_run": [], "peaks": {}}


def _devices(config: pytest.Config) -> tuple[str, ...]:
    chosen = config.getoption("bench_device")
    return ("cpu", "cuda") if chosen == "all" else (chosen,)


def selected_cases(config: pytest.Config):
    tier = config.getoption("tier")
    return [case for case in load_cases(suites=config.getoption("suite")) if in_tier(case, tier)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = ("computation", "bench_device", "bench_case")
    if not all(name in metafunc.fixturenames for name in names):
        return
    config = metafunc.config
    cases = selected_cases(config)
    params = []
    for computation in computations():
        for device in _devices(config):
            if device not in computation.devices:
                continue
            reason = computation.not_benchmarked_reason(device)
            if reason is not None:
                config.stash[_STATE]["not_run"].append(
                    {"computation": computation.name, "device": device, "reason": reason}
                )
                mark = pytest.mark.skip(reason=f"{computation.name} on {device} not timed: {reason}")
                params.append(pytest.param(computation, device, None, id=f"{computation.name}-{device}", marks=mark))
                continue
            params += [
                pytest.param(computation, device, case, id=f"{computation.name}-{device}-{case.suite}-{case.name}")
                for case in cases
            ]
    metafunc.parametrize(names, params)


def roofline_peaks(config: pytest.Config, device: str) -> machine.Peaks:
    """The device's peaks, probed once per session (or given on the command line)."""
    cache = config.stash[_STATE]["peaks"]
    if device not in cache:
        cache[device] = machine.peaks(
            torch.device(device), config.getoption("peak_gflops"), config.getoption("peak_gbps")
        )
    return cache[device]


def record_failure(config: pytest.Config, computation: Computation, device: str, case, error: BaseException) -> None:
    config.stash[_STATE]["failures"].append(
        {"computation": computation.name, "device": device, "case": case.name,
         "error": f"{type(error).__name__}: {error}"}  # fmt: skip
    )


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    cpu, gpu = machine.cpu_info(), machine.gpu_info()
    if gpu is not None and "cuda" in _devices(config):
        gpu["peaks"] = roofline_peaks(config, "cuda").as_dict()
    machine_info["sw"] = {
        "fingerprint": machine.fingerprint(cpu, gpu),
        "cpu": cpu,
        "gpu": gpu,
        "peaks": roofline_peaks(config, "cpu").as_dict(),
        "software": machine.software_versions(),
    }


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    state = config.stash[_STATE]
    kernels, kernel_errors = kernel_table([c.implementation for c in computations() if c.implementation])
    output_json["sw"] = {
        "tier": config.getoption("tier"),
        "suites": sorted({case.suite for case in selected_cases(config)}),
        "dtype": config.getoption("bench_dtype"),
        "command": shlex.join(["pytest", *sys.argv[1:]]),
        "failures": state["failures"],
        "not_run": state["not_run"],
        "kernels": kernels.to_dict("records"),
        "kernel_errors": kernel_errors,
    }
