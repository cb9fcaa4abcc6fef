"""Throughput of every implementation and peer on the selected cases (``pytest --benchmark-only``).

Skipped in the normal test run (``--benchmark-skip`` in pyproject's addopts). Options:
``--suite``, ``--tier quick|full``, ``--bench-device``, ``--peak-gflops``/``--peak-gbps``,
``--l2-flush`` (see harness/bench_plugin.py). Save results with ``--benchmark-json=FILE`` and
turn them into a report with ``swbench report FILE``.

Before timing, each computation runs once (its warm-up): an implementation's result must
match the reference within the error bound (required: a wrong answer is recorded as a
failure and not timed). It is called deterministic when that first result and the result
pytest-benchmark returns (one more call after the timed rounds) are bitwise equal (recorded,
not required).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.bench import ResultMismatch, outputs_equal
from harness.bench_plugin import DTYPES, record_failure, roofline_peaks
from harness.perf import derived_metrics, useful_flops

#: Bytes overwritten before each round with --l2-flush: larger than any GPU's L2 so far (H100: 50 MiB).
L2_FLUSH_BYTES = 256 * 2**20


def _flusher(device: str):
    scratch = torch.empty(L2_FLUSH_BYTES // 4, device=device)

    def flush() -> None:
        scratch.fill_(1.0)
        torch.cuda.synchronize(device)

    return flush


def test_throughput(benchmark, computation, bench_device, bench_case, request):
    config = request.config
    dtype = DTYPES[config.getoption("bench_dtype")]
    mismatch = None
    try:
        prepared = computation.prepare(bench_case, dtype, bench_device)
        first = prepared.run()  # also the warm-up: compilation, caches, allocator
        verified = prepared.verify(first)
    except ResultMismatch as error:  # recorded in the JSON; the other computations go on
        record_failure(config, computation, bench_device, bench_case, error)
        mismatch = str(error)
    except Exception as error:  # a crash: recorded too, and reported with its traceback
        record_failure(config, computation, bench_device, bench_case, error)
        raise
    assert mismatch is None, f"wrong result, not timed: {mismatch}"
    case_fields = {k: v for k, v in dataclasses.asdict(bench_case).items() if k not in ("name", "seed")}
    benchmark.group = f"{bench_case.suite}/{bench_case.name}"
    benchmark.extra_info.update(
        kind=computation.kind,
        computation=computation.name,
        description=computation.description,
        device=bench_device,
        execution=computation.execution_mode(bench_device),
        threads=torch.get_num_threads() if bench_device == "cpu" else None,
        dtype=str(dtype).removeprefix("torch."),
        case=bench_case.name,
        seed=bench_case.seed,
        nk=bench_case.spec().nk,
        **case_fields,
        useful_flops=useful_flops(bench_case.spec(), bench_case.input_shape),
        flops=prepared.workload.flops,
        compulsory_bytes=prepared.workload.compulsory_bytes,
        traffic_bytes=prepared.workload.traffic_bytes,
        verified=verified,
    )
    if config.getoption("l2_flush") and bench_device == "cuda":
        last = benchmark.pedantic(prepared.run, setup=_flusher(bench_device), rounds=20, warmup_rounds=1)
    else:
        last = benchmark(prepared.run)
    benchmark.extra_info["deterministic"] = outputs_equal(first, last)
    peaks = roofline_peaks(config, bench_device)
    if benchmark.stats is not None:  # None under --benchmark-disable
        metrics = derived_metrics(prepared.workload, benchmark.stats.stats.median, peaks.gflops, peaks.gbps)
        benchmark.extra_info["metrics"] = metrics.as_dict()
