"""Model-level throughput (Table 7): ``pytest --benchmark-only --suite models``.

One test per (network, implementation, batch) of the selected model suites and tier, on the
devices of ``--bench-device``, in ``--bench-dtype`` (options of harness/bench_plugin.py). SW
networks run once per registered implementation; one that cannot run here (unavailable,
emulated GPU code, dtype) is a skipped test naming the reason. Before timing, each network is
verified in float64 against the same network on the reference path
(``harness.models.bench.verify_network``); a mismatch is recorded as a failure and not timed.
"""

from __future__ import annotations

import pytest

from harness.bench_plugin import DTYPES
from harness.cases import load_cases


def _selected_suites(config: pytest.Config) -> list[str] | None:
    return config.getoption("suite")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "model_run" not in metafunc.fixturenames:
        return
    from harness.models.bench import SUITE, load_model_cases, model_runs

    config = metafunc.config
    if not config.getoption("benchmark_only", False):  # a plain test run: one placeholder, deselected
        metafunc.parametrize("model_run", [pytest.param(None, id="not-benchmarking", marks=pytest.mark.sw_not_benchmarking)])
        return
    suites = _selected_suites(config)
    chosen = config.getoption("bench_device")
    devices = ("cpu", "cuda") if chosen == "all" else (chosen,)
    dtype = DTYPES[config.getoption("bench_dtype")]
    if suites is not None:
        load_cases(suites=suites)  # an unknown suite name fails here, as for layers
    runs = model_runs(suites, config.getoption("tier"), devices, dtype) if load_model_cases(suites=suites) else []
    if not runs:
        reason = f"no model suite selected (--suite {' '.join(suites or [])}; the models suite is {SUITE!r})"
        metafunc.parametrize("model_run", [pytest.param(None, id="no-model-suite", marks=pytest.mark.skip(reason=reason))])
        return
    metafunc.parametrize("model_run", [
        pytest.param(run, id=run.id, marks=[pytest.mark.skip(reason=f"{run.computation} on {run.device} not timed: {run.skip}")]
                     if run.skip else [])
        for run in runs
    ])  # fmt: skip


def _record_failure(session, run, error: BaseException) -> None:
    """Into the JSON's ``sw.failures``, as the layer benchmarks record theirs."""
    session.failures.append({"computation": run.computation, "device": run.device, "case": run.case.name,
                             "error": f"{type(error).__name__}: {error}"})  # fmt: skip


def test_model_throughput(benchmark, model_run, bench_session, request):
    from harness.models.bench import ModelMismatch, prepare

    config = request.config
    dtype = DTYPES[config.getoption("bench_dtype")]
    mismatch = None
    try:
        prepared = prepare(model_run, dtype)
    except ModelMismatch as error:  # recorded in the JSON; the other networks go on
        _record_failure(bench_session, model_run, error)
        mismatch = str(error)
    except Exception as error:
        _record_failure(bench_session, model_run, error)
        raise
    assert mismatch is None, f"wrong result, not timed: {mismatch}"
    benchmark.group = f"models/{model_run.case.name}"
    benchmark.extra_info.update(prepared.extra_info)
    benchmark.pedantic(prepared.run, rounds=model_run.case.rounds, iterations=1, warmup_rounds=0)
    # images/s is derived by the report (batch / median), not stored beside the timings
