"""``swbench check``'s run: which checks a tier makes, and running them across processes.

Tiers:

- ``quick`` (the default; minutes on 2 cores): every case of the suites whose TOML says
  ``checks = "all"`` (edge shapes), one case per real-network layer at batch 1 of those saying
  ``checks = "layers"`` (the first batch-1 case of each (suite, M, k, C, H, W)), none of those
  saying ``full`` (sweeps), and 4 random specs; gradients only where the input has at most
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
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collections.abc import Mapping

from harness.cases import TIERS, Case, Tier, load_cases, load_suites
from harness.checking.check import CheckResult, Failure, check
from harness.checking.inputs import CaseTooLarge, CheckCase
from harness.registry import discover
from harness.timelimit import TimeLimitExceeded, time_limit

#: Random specs a tier adds unless told otherwise.
RANDOM_SPECS = {"quick": 4, "full": 20}
#: Memory layouts other than contiguous: every tier checks them on the cheap cases (edge shapes,
#: other suites' and random specs) in exact mode and the first dtype, the full tier on every case.
OTHER_LAYOUTS = ("strided", "channels_last")
#: Largest input (B*C*H*W) whose gradients the quick tier checks.
QUICK_GRADIENT_ELEMENTS = 4096
#: Checks per task sent to a worker (each for every implementation): small enough to balance the cores.
CHUNK = 4
#: Seconds one check (an implementation on one case: forward, probe and gradients) may take by default.
CHECK_TIMEOUT = 300.0
#: Seconds a worker gets beyond its checks' limits (start-up: torch, discovery, compilation) before it is killed.
WORKER_GRACE = 120.0


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


def suite_checks(cases_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Each suite's ``checks`` (what its TOML says it is for), by name."""
    return {suite.name: suite.checks for suite in load_suites(cases_dir)}


def tier_cases(tier: str, cases: Sequence[Case], checks: Mapping[str, str] | None = None) -> list[Case]:
    """The cases of ``cases`` that ``tier`` checks (random specs are added separately), by what
    each case's suite says it is for (``checks``: suite -> ``harness.cases.CHECKS`` value; default
    the project's suites; a suite not in it: every case)."""
    if tier not in TIERS:
        raise ValueError(f"check tier must be one of {TIERS}, got {tier!r}")
    checks = suite_checks() if checks is None else checks
    if Tier.parse(tier) is Tier.FULL:
        return [case for case in cases if checks.get(case.suite, "all") != "none"]
    chosen, layers = [], set()
    for case in cases:
        purpose = checks.get(case.suite, "all")
        if purpose == "all":
            chosen.append(case)
        elif purpose == "layers" and case.batch == 1:
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
    purposes = suite_checks(cases_dir)
    chosen = tier_cases(tier, found, purposes)
    if cases_dir is not None and not chosen:
        raise ValueError(
            f"--cases-dir: the {tier} tier checks none of the cases in {cases_dir} "
            f"(suites {sorted({c.suite for c in found})}); pass --tier full"
        )
    cases = chosen + random_cases(count, seed)
    checks, grads = [], []
    for case in cases:
        layouts = ("contiguous", *OTHER_LAYOUTS) if tier == "full" or purposes.get(case.suite) != "layers" else ("contiguous",)
        for mode in modes:
            for dtype in dtypes:
                for layout in layouts:
                    if layout != "contiguous" and (mode, dtype) != (modes[0], dtypes[0]):
                        continue
                    checks.append(CheckCase(case, dtype, mode, layout, device=device))
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
    #: seconds each check may take
    timeout: float = CHECK_TIMEOUT

    @property
    def deadline(self) -> float:
        """Seconds the whole task may take in a worker before the worker is killed."""
        return self.timeout * len(self.checks) * len(self.implementations) + WORKER_GRACE

    def split(self) -> list[_Task]:
        """Smaller tasks, to find which implementation (then which check) crashed or hung: one
        per implementation, else one per check."""
        if len(self.implementations) > 1:
            return [dataclasses.replace(self, implementations=(name,)) for name in self.implementations]
        return [dataclasses.replace(self, checks=(c,), gradients=(g,)) for c, g in zip(self.checks, self.gradients)]

    def died(self, kind: str, why: str) -> list[CheckResult]:
        """Every check of this task failed for one reason (a crash or a hang of its one implementation)."""
        return [CheckResult(name, c, (Failure(kind, why),), impls_dir=self.folder) for c in self.checks for name in self.implementations]

    @property
    def folder(self) -> Path | None:
        return Path(self.impls_dir).resolve() if self.impls_dir else None


def _run_task(task: _Task) -> list[CheckResult]:
    found = discover(task.impls_dir).implementations
    results = []
    for check_case, gradients in zip(task.checks, task.gradients):
        for name in task.implementations:
            try:
                with time_limit(task.timeout, "the check"):
                    results.append(check(found[name], check_case, gradients=gradients))
            except TimeLimitExceeded:
                failure = Failure("timeout", f"the check ran past its time limit of {task.timeout:g} s (--timeout)")
                results.append(CheckResult(name, check_case, (failure,), impls_dir=task.folder))
            except CaseTooLarge as error:
                results.append(CheckResult(name, check_case, (Failure("refused", str(error)),), impls_dir=task.folder))
            except Exception as error:  # the harness's own refusal (e.g. a case too large for exact mode)
                failure = Failure("error", f"the check could not be made: {type(error).__name__}: {error}")
                results.append(CheckResult(name, check_case, (failure,), impls_dir=task.folder))
    return results


def _init_worker() -> None:
    """One thread each for torch and Numba: the processes already use every core. Ctrl-C is
    the parent's to handle (it stops the workers at once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def run(
    implementations: Sequence[str],
    checks: Plan,
    *,
    impls_dir: str | None = None,
    jobs: int | None = None,
    progress: Callable[[str, int], None] = lambda description, done: None,
    timeout: float = CHECK_TIMEOUT,
) -> list[CheckResult]:
    """Every check for every implementation; ``progress(description, checks done)`` after each task.

    ``jobs`` 1 runs in this process (a crash of an implementation ends it); otherwise in that
    many worker processes (default: one per core), a single check too, so that a crash or a
    hang is a failure of the implementation that caused it, never of the others."""
    tasks = [
        _Task(
            tuple(implementations), impls_dir, checks.checks[start : start + CHUNK],
            checks.gradients[start : start + CHUNK], timeout,
        )  # fmt: skip
        for start in range(0, len(checks.checks), CHUNK)
    ]
    jobs = jobs or os.cpu_count() or 1
    results: list[CheckResult] = []

    def finished(task: _Task, done: list[CheckResult]) -> None:
        results.extend(done)
        progress(f"{task.checks[-1].case.suite}/{task.checks[-1].case.name}", len(done))

    if jobs == 1:
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
    """Run tasks in a pool; return the ones not finished if the pool broke (a worker died, or
    ran past its deadline and was killed)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch's threads
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker)
    try:
        futures = {pool.submit(_run_task, task): task for task in tasks}
        while futures:
            done, _ = wait(futures, timeout=max(task.deadline for task in futures.values()), return_when=FIRST_COMPLETED)
            if not done:  # nothing finished in a whole task's time: a worker hangs
                _kill(pool)
                return list(futures.values())
            for future in done:
                task = futures.pop(future)
                try:
                    finished(task, future.result())
                except BrokenProcessPool:
                    return [task, *futures.values()]
        return []
    except BaseException:  # Ctrl-C: stop the workers now, not after their running checks
        _kill(pool)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _kill(pool: ProcessPoolExecutor) -> None:
    for process in list((pool._processes or {}).values()):  # noqa: SLF001 (no public way before Python 3.14)
        process.kill()


def _run_alone(task: _Task) -> list[CheckResult]:
    """Run a task in a worker of its own; if it dies or hangs, split it until the check that did
    is found, and blame only that implementation on that check."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker)
    try:
        return pool.submit(_run_task, task).result(timeout=task.deadline)
    except BrokenProcessPool:
        kind, why = "crash", "the worker process died while checking this (a crash in native code, or the process exited)"
    except TimeoutError:
        kind, why = "timeout", f"the check hung: its worker was killed after {task.deadline:g} s (time limit {task.timeout:g} s per check, --timeout)"
    finally:
        _kill(pool)
        pool.shutdown(wait=False, cancel_futures=True)
    if len(task.checks) * len(task.implementations) == 1:
        return task.died(kind, why)
    return [result for part in task.split() for result in _run_alone(part)]
