"""pytest plugin for the benchmarks (``pytest --benchmark-only``) and the per-implementation
tests, loaded by the root conftest: the project's one ``pytest_generate_tests``.

Command-line options select what is timed (``--suite``, ``--tier``, ``--bench-device``,
``--bench-dtype``) and the roofline's peaks (``--peak-gflops``, ``--peak-gbps`` override the
probes). A test taking one of ``ITEM_FIXTURES`` (``layer_item``, ``layer_comparison_item``,
``network_item``, ``comparison_item``, ``layer_training_item``, ``training_item``) runs once per
benchmark item of that kind (``harness.bench.Item``) and calls ``bench_session.measure``; an
item that cannot be timed here is a skipped test naming the reason. Tests taking ``impl`` and
``device`` run once per implementation and device.

The run's record (``harness.results.RunRecord``, the JSON's ``sw`` key) is built from what
executes: the suites of the items that ran, the items skipped (with their reasons) as
``not_run``, the failures; items removed by ``-k`` or ``--deselect`` appear in neither. The
machine's peaks are probed once collection is done, before the first benchmark, and again
after the last (``sw.probes``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from harness import eligibility, machine
from harness.bench import BENCH_TIMEOUT, Item, Selection, Session, layer_items
from harness.cases import TIERS, load_cases, suite_descriptions
from harness.eligibility import Purpose
from harness.registry import discover, implementations
from harness.results import RunRecord

_SESSION = pytest.StashKey[Session]()
_INTERRUPTED = pytest.StashKey[bool]()
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Marks the one placeholder item of a run that does not benchmark (deselected, never reported).
_NOT_BENCHMARKING = "sw_not_benchmarking"


def _network_items(selection: Selection) -> list[Item]:
    from harness.models.bench import network_items  # networks (and their layers) only when benchmarking them

    return network_items(selection)


def _comparison_items(selection: Selection) -> list[Item]:
    from harness.models.compare import comparison_items

    return comparison_items(selection)


def _layer_comparison_items(selection: Selection) -> list[Item]:
    from harness.layer_compare import layer_comparison_items

    return layer_comparison_items(selection)


def _training_items(selection: Selection) -> list[Item]:
    from harness.models.training import training_items

    return training_items(selection)


def _layer_training_items(selection: Selection) -> list[Item]:
    from harness.models.training import layer_training_items

    return layer_training_items(selection)


#: test fixture -> the items of that kind a run's selection asks for
ITEM_FIXTURES: dict[str, Callable[[Selection], list[Item]]] = {
    "layer_item": layer_items, "layer_comparison_item": _layer_comparison_items,
    "network_item": _network_items, "comparison_item": _comparison_items,
    "layer_training_item": _layer_training_items, "training_item": _training_items,
}  # fmt: skip


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
                    help="accepted for older command lines, and does nothing: a run never builds the kernels table "
                         "(`swbench kernels --json`; `swbench report --kernels`)")  # fmt: skip
    group.addoption("--gpu-graph", action="store_true", default=False,
                    help="on a GPU, also time replays of the work captured once in a CUDA graph (harness.gputime)")  # fmt: skip
    group.addoption("--bench-timeout", type=_positive_number, default=BENCH_TIMEOUT, metavar="SECONDS",
                    help=f"time limit of one benchmark item, verification and timing included; an item past it is "
                         f"recorded as failed and the run goes on (default {BENCH_TIMEOUT:g})")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{_NOT_BENCHMARKING}: placeholder of a benchmark test in a run without --benchmark-only")
    if _benchmarking(config) and config.getoption("suite") is not None:
        try:  # before any work: an unknown suite name, or a suite that does not load, is a usage error
            load_cases(suites=config.getoption("suite"))
        except ValueError as error:
            raise pytest.UsageError(f"--suite: {error}") from None
    record = RunRecord(tier=config.getoption("tier"), command=shlex.join(["pytest", *sys.argv[1:]]),
                       dtype=config.getoption("bench_dtype"))  # fmt: skip
    config.stash[_SESSION] = Session(
        dtype=DTYPES[config.getoption("bench_dtype")],
        record=record,
        peak_gflops=config.getoption("peak_gflops"),
        peak_gbps=config.getoption("peak_gbps"),
        l2_flush=config.getoption("l2_flush"),
        gpu_graph=config.getoption("gpu_graph"),
        time_limit=config.getoption("bench_timeout"),
    )


def _benchmarking(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_only", False))


def _devices(config: pytest.Config) -> tuple[str, ...]:
    chosen = config.getoption("bench_device")
    return ("cpu", "cuda") if chosen == "all" else (chosen,)


def _selection(config: pytest.Config) -> Selection:
    suites = config.getoption("suite")  # checked in pytest_configure
    return Selection(tuple(suites) if suites else None, config.getoption("tier"), _devices(config),
                     DTYPES[config.getoption("bench_dtype")])  # fmt: skip


@pytest.fixture
def bench_session(request: pytest.FixtureRequest) -> Session:
    """The run's ``harness.bench.Session``: ``bench_session.measure(benchmark, item)``."""
    return request.config.stash[_SESSION]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" in metafunc.fixturenames and "device" in metafunc.fixturenames:
        _parametrize_implementations(metafunc)
    kinds = [name for name in ITEM_FIXTURES if name in metafunc.fixturenames]
    if not kinds:
        return
    (fixture,) = kinds
    config = metafunc.config
    items = ITEM_FIXTURES[fixture](_selection(config)) if _benchmarking(config) else []
    if not items:  # a plain test run, or nothing of this kind selected: one placeholder, deselected
        metafunc.parametrize(fixture, [pytest.param(None, id="none", marks=getattr(pytest.mark, _NOT_BENCHMARKING))])
        return
    metafunc.parametrize(fixture, [
        pytest.param(item, id=item.id,
                     marks=[pytest.mark.skip(reason=f"{item.computation} on {item.device} not timed: {item.skip}")] if item.skip else [])
        for item in items
    ])  # fmt: skip


def _parametrize_implementations(metafunc: pytest.Metafunc) -> None:
    """Once per implementation in impls/ and device it declares; a pair that cannot run here is
    skipped with the implementation's own reason."""
    params = []
    for name, impl in sorted(implementations().items()):
        for device in impl.devices:
            reason = eligibility.reason(impl, device, None, Purpose.CHECK)
            marks = [pytest.mark.skip(reason=f"{name} on {device}: {reason}")] if reason else []
            params.append(pytest.param(impl, device, id=f"{name}-{device}", marks=marks))
    metafunc.parametrize(("impl", "device"), params)


def _item_of(node: pytest.Item) -> Item | None:
    params = getattr(getattr(node, "callspec", None), "params", {})
    return next((params[name] for name in ITEM_FIXTURES if params.get(name) is not None), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks and tests never share a run: a plain run deselects the benchmark placeholders,
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


def pytest_collection_finish(session: pytest.Session) -> None:
    """After every selection (``-k``, ``--deselect``, the hook above): the peaks of each device
    that has an item to time, probed now, before the first benchmark."""
    if not _benchmarking(session.config) or session.config.option.collectonly:
        return
    bench = session.config.stash[_SESSION]
    devices = sorted({item.device for node in session.items if (item := _item_of(node)) is not None and item.skip is None})
    for device in devices:
        bench.peaks(device)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A benchmark item skipped here goes into the run's not-run list, with its reason; one
    that failed, or one of whose parts failed (a network of a comparison), gets the command that
    reruns it alone beside each failure."""
    report = yield
    bench_item = _item_of(item)
    if bench_item is not None and report.skipped and report.when == "setup":
        item.config.stash[_SESSION].skipped(bench_item)
    elif bench_item is not None and report.when == "call":
        item.config.stash[_SESSION].reproduce(bench_item, _reproducer(item, bench_item))
    return report


def _reproducer(node: pytest.Item, bench_item: Item) -> str:
    config = node.config
    command = ["pytest", "--benchmark-only", node.nodeid, "--tier", config.getoption("tier"),
               "--bench-dtype", config.getoption("bench_dtype")]  # fmt: skip
    if bench_item.suite:
        command += ["--suite", bench_item.suite]
    if config.getoption("bench_timeout") != BENCH_TIMEOUT:
        command += ["--bench-timeout", f"{config.getoption('bench_timeout'):g}"]
    folder = os.environ.get("SW_IMPLS_DIR")
    return shlex.join(command) if not folder else f"SW_IMPLS_DIR={shlex.quote(folder)} {shlex.join(command)}"


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
    record = config.stash[_SESSION].record
    record.suite_descriptions = {k: v for k, v in suite_descriptions().items() if k in record.suites}
    record.load_errors = {file: error.splitlines()[0] for file, error in discover().errors.items()}
    record.interrupted = bool(config.stash.get(_INTERRUPTED, False))
    output_json["sw"] = record.to_json()


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
    if _benchmarking(config) and writer is not None and writer.benchmarks:
        config.stash[_SESSION].probe_end(_devices(config))  # the peaks again, after the last benchmark
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
    if _benchmarking(config):
        for file, error in sorted(discover().errors.items()):  # in the JSON and the report too
            print(f"\nimplementation file did not load: {file}: {error.splitlines()[0]}", file=sys.stderr)
    if _benchmarking(config) and writer is not None and not writer.benchmarks and session.exitstatus == pytest.ExitCode.OK:
        print("\nnothing was benchmarked (every item skipped, deselected or failed): exit 5, no JSON written", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
