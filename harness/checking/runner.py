"""``swbench check``'s run: which checks a tier makes, and running them across processes.

Tiers:

- ``quick`` (the default; minutes on 2 cores): every case of the ``edge`` suite, one case per
  real-network layer at batch 1 (the first batch-1 case of each (suite, M, k, C, H, W) in the
  layer suites), and 4 random specs; gradients only where the input has at most
  ``QUICK_GRADIENT_ELEMENTS`` elements (the Hypothesis tests cover gradients on small shapes;
  a real 56x56 layer's exact backward proves little more and costs minutes).
- ``full``: every case of ``cases/`` (sweeps and throughput batches included), 20 random specs,
  gradients everywhere.

Checks run in worker processes (one per core, each with one torch and one Numba thread), an
implementation's checks in chunks so the cores share the work; a worker that dies (a crash in
native code) fails only the checks of the chunk it was running.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.cases import Case, load_cases
from harness.checking.check import CheckResult, Failure, check
from harness.checking.inputs import CheckCase
from harness.registry import discover

TIERS = ("quick", "full")
#: Random specs a tier adds unless told otherwise.
RANDOM_SPECS = {"quick": 4, "full": 20}
#: Suites of edge shapes: all of their cases are in every tier.
EDGE_SUITES = ("edge",)
#: Suites whose cases are real network layers.
LAYER_SUITES = ("sw_tiny", "sw_small")
#: Largest input (B*C*H*W) whose gradients the quick tier checks.
QUICK_GRADIENT_ELEMENTS = 4096
#: Checks per task sent to a worker (each for every implementation): small enough to balance the cores.
CHUNK = 4


def random_cases(count: int, seed: int) -> list[Case]:
    """``count`` random operator instances, sizes up to real layers' kernels (M <= 51)."""
    if count < 0:
        raise ValueError(f"count of random specs must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        small = int(rng.choice([1, 3, 5, 7]))
        big = 2 * int(rng.integers(small // 2, 26)) + 1
        cases.append(
            Case(
                name=f"random-{seed}-{index}",
                big_kernel=big,
                small_kernel=small,
                channels=int(rng.integers(1, 17)),
                groups=int(rng.integers(1, 9)),
                batch=int(rng.integers(1, 3)),
                height=int(rng.integers(1, 41)),
                width=int(rng.integers(1, 41)),
                tables=str(rng.choice(["random", "official"])),
                seed=int(rng.integers(0, 2**31)),
                sparsity=float(rng.choice([0.0, 0.3, 0.6, 1.0])),
                suite="random",
            )
        )
    return cases


def tier_cases(tier: str, cases: Sequence[Case]) -> list[Case]:
    """The cases of ``cases`` that ``tier`` checks (random specs are added separately)."""
    if tier not in TIERS:
        raise ValueError(f"check tier must be one of {TIERS}, got {tier!r}")
    if tier == "full":
        return list(cases)
    chosen, layers = [], set()
    for case in cases:
        if case.suite in EDGE_SUITES:
            chosen.append(case)
        elif case.suite in LAYER_SUITES and case.batch == 1:
            layer = (case.suite, case.big_kernel, case.small_kernel, case.channels, case.height, case.width)
            if layer not in layers:
                layers.add(layer)
                chosen.append(case)
    return chosen


def check_gradients_for(tier: str, case: Case) -> bool:
    return tier == "full" or case.batch * case.channels * case.height * case.width <= QUICK_GRADIENT_ELEMENTS


@dataclass(frozen=True)
class Plan:
    """What one ``swbench check`` run checks."""

    checks: tuple[CheckCase, ...]
    #: per check: whether its gradients are checked (for implementations with autograd)
    gradients: tuple[bool, ...]


def plan(
    tier: str,
    *,
    device: str,
    modes: Sequence[str],
    dtypes: Sequence[str],
    cases_dir: str | os.PathLike | None = None,
    suites: Sequence[str] | None = None,
    random: int | None = None,
    seed: int = 0,
    gradients: bool = True,
) -> Plan:
    """The checks of a tier; raises ValueError (a usage error) for a bad folder, suite or count."""
    if cases_dir is not None and not Path(cases_dir).is_dir():
        raise ValueError(f"--cases-dir: folder {cases_dir} does not exist")
    found = load_cases(cases_dir, list(suites) if suites else None)
    if not found and cases_dir is not None:
        raise ValueError(f"--cases-dir: no case suites (*.toml with [[case]] tables) in {cases_dir}")
    count = RANDOM_SPECS[tier] if random is None else random
    cases = tier_cases(tier, found) + random_cases(count, seed)
    checks, grads = [], []
    for case in cases:
        for mode in modes:
            for dtype in dtypes:
                checks.append(CheckCase(case, dtype, mode, device=device))
                grads.append(gradients and check_gradients_for(tier, case))
    return Plan(tuple(checks), tuple(grads))


@dataclass(frozen=True)
class _Task:
    """A chunk of checks, each made for every implementation in turn (so the float64 reference
    of a check is computed once, not once per implementation)."""

    implementations: tuple[str, ...]
    impls_dir: str | None
    checks: tuple[CheckCase, ...]
    gradients: tuple[bool, ...]


def _run_task(task: _Task) -> list[CheckResult]:
    found = discover(task.impls_dir).implementations
    results = []
    for check_case, gradients in zip(task.checks, task.gradients):
        for name in task.implementations:
            try:
                results.append(check(found[name], check_case, gradients=gradients))
            except Exception as error:  # the harness's own refusal (e.g. a case too large for exact mode)
                failure = Failure("error", f"the check could not be made: {type(error).__name__}: {error}")
                results.append(CheckResult(name, check_case, (failure,)))
    return results


def _init_worker() -> None:
    """One thread each for torch and Numba: the processes already use every core."""
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def _crashed(task: _Task, error: BaseException) -> list[CheckResult]:
    message = f"the worker process running these checks died ({type(error).__name__}: {error}); rerun one with its reproducer"
    return [CheckResult(name, c, (Failure("error", message),)) for c in task.checks for name in task.implementations]


def run(
    implementations: Sequence[str],
    checks: Plan,
    *,
    impls_dir: str | None = None,
    jobs: int | None = None,
    progress: Callable[[str, int], None] = lambda description, done: None,
) -> list[CheckResult]:
    """Every check for every implementation; ``progress(description, checks done)`` after each task.

    ``jobs`` 1 runs in this process; more uses that many worker processes (default: one per core)."""
    tasks = [
        _Task(tuple(implementations), impls_dir, checks.checks[start : start + CHUNK], checks.gradients[start : start + CHUNK])
        for start in range(0, len(checks.checks), CHUNK)
    ]
    jobs = jobs or os.cpu_count() or 1
    results: list[CheckResult] = []

    def finished(task: _Task, done: list[CheckResult]) -> None:
        results.extend(done)
        progress(f"{task.checks[-1].case.suite}/{task.checks[-1].case.name}", len(done))

    if jobs == 1 or len(tasks) <= 1:
        for task in tasks:
            finished(task, _run_task(task))
        return results
    pending = list(tasks)
    while pending:
        pending = _run_pool(pending, min(jobs, len(pending)), finished)
        for task in pending[:1]:  # the pool broke: run one task alone, so a crash names its task
            pending = pending[1:]
            finished(task, _run_alone(task))
    return results


def _run_pool(tasks: list[_Task], jobs: int, finished) -> list[_Task]:
    """Run tasks in a pool; return the ones not finished if the pool broke."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch's threads
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker) as pool:
        futures = {pool.submit(_run_task, task): task for task in tasks}
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                task = futures.pop(future)
                try:
                    finished(task, future.result())
                except BrokenProcessPool:
                    return [task, *futures.values()]
    return []


def _run_alone(task: _Task) -> list[CheckResult]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker) as pool:
        try:
            return pool.submit(_run_task, task).result()
        except BrokenProcessPool as error:
            return _crashed(task, error)
