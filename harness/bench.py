"""What the benchmarks time and how: implementations and peers made ready on a case, verified,
timed by pytest-benchmark and recorded as a ``harness.results.BenchmarkRow``.

``computations()`` lists every implementation from ``impls/`` and every peer as a
``Computation`` with its declared role. ``Computation.prepare(case, dtype, device)`` builds
seeded inputs once and returns a ``Prepared`` call to time, its workload by count, and a check
of its result: an implementation's output must match the reference within the error bound
before it is timed (timing a wrong answer is meaningless); a peer computes the same branches
by another path or another operator and is not compared here (tests/test_peers.py checks the
PyTorch ways against the reference).

``Session`` runs one benchmark (``Session.measure``) and keeps what a run records beside the
timings: failures, what was not run and why, the roofline peaks probed once per device. The
pytest plugin (``harness.bench_plugin``) owns one per pytest session; the test function only
parametrizes and calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from harness import gputime, machine
from harness.cases import TIERS, Case
from harness.checking import CheckCase, bitwise_equal, compare_with_reference, expected_result, integrity, make_inputs
from harness.peers import Peer, peers
from harness.perf import Workload, useful_flops
from harness.registry import Implementation, Role, implementations
from harness.results import BenchmarkRow
from harness.traffic import compulsory_bytes

class ResultMismatch(AssertionError):
    """An implementation's output on a benchmark case differs from the reference."""


@dataclass(frozen=True)
class Prepared:
    """One timed call on fixed inputs. ``run`` returns when the result is complete (it
    synchronizes a GPU), so host-clock timing of it is correct."""

    run: Callable[[], object]
    workload: Workload
    #: raises ResultMismatch if ``run``'s output is wrong; returns what was verified
    verify: Callable[[object], str]
    #: preparation that is not timed (e.g. torch.compile), in seconds
    setup_seconds: float | None = None
    #: the implementation's inputs (x first) that ``run`` reads, for the checks after timing
    #: (``harness.checking.integrity.timed_calls_problems``); empty for a peer
    inputs: tuple[torch.Tensor, ...] = ()


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    if device.type != "cuda":
        return fn

    def run() -> object:
        result = fn()
        torch.cuda.synchronize(device)
        return result

    run.unsynchronized = fn  # what harness.gputime times with events
    return run


def outputs_equal(first: object, second: object) -> bool:
    """Bitwise equality of two results (a tensor or a tuple of tensors)."""
    first = first if isinstance(first, tuple) else (first,)
    second = second if isinstance(second, tuple) else (second,)
    return len(first) == len(second) and all(bitwise_equal(a, b) for a, b in zip(first, second))


@dataclass(frozen=True)
class Computation:
    """An implementation or a peer, as the benchmarks see it."""

    name: str
    role: Role
    description: str
    implementation: Implementation | None = None
    peer: Peer | None = None

    @property
    def baseline(self) -> bool:
        return self.peer is not None and self.peer.baseline

    @property
    def devices(self) -> tuple[str, ...]:
        return self.implementation.devices if self.implementation else ("cpu", "cuda")

    def not_benchmarked_reason(self, device: str, tier: str = "full") -> str | None:
        """Why this computation is not timed on ``device`` in a ``tier`` run here, or None if it is."""
        if self.peer is not None and not tier_includes(tier, self.peer.tier):
            return f"timed from the {self.peer.tier} tier on: {self.peer.tier_reason}"
        if self.implementation is None:
            if device == "cuda" and not torch.cuda.is_available():
                return "no CUDA device (torch.cuda.is_available() is False)"
            return None
        execution = self.implementation.runs_on(device)
        if execution.unavailable is None and execution.emulated:
            return f"{execution.mode}: an emulation of GPU code, checked for correctness but never timed"
        return execution.unavailable

    def execution_mode(self, device: str) -> str:
        return self.implementation.execution_mode(device) if self.implementation else f"torch on {device}"

    def prepare(self, case: Case, dtype: torch.dtype, device: str) -> Prepared:
        device = torch.device(device)
        dtype_name = str(dtype).removeprefix("torch.")
        inputs = make_inputs(CheckCase(case, dtype_name, "float", device=str(device)), nan_pruned=True)
        x, weight, spec = inputs.x, inputs.weight, case.spec()
        if self.peer is not None:
            prepared = self.peer.prepare(case, x, weight)
            workload = Workload(case.batch, prepared.flops, prepared.compulsory_bytes, None)
            return Prepared(
                _synchronized(prepared.run, device), workload,
                lambda result: "peer: computes the branches another way, not compared here", prepared.setup_seconds,
            )  # fmt: skip

        impl = self.implementation
        traffic = impl.traffic(spec, case.input_shape, x.element_size()) if impl.traffic else None
        flops = useful_flops(spec, case.input_shape)
        workload = Workload(case.batch, flops, compulsory_bytes(spec, case.input_shape, x.element_size()), traffic)

        def run() -> object:
            with torch.no_grad():
                return impl(x, weight, spec)

        def verify(result: object) -> str:
            problems = compare_with_reference(result, expected_result(x, weight, spec, exact=False), dtype)
            if problems:
                raise ResultMismatch(f"{self.name} on {case.name}: " + "; ".join(problems))
            return "matches the reference within the error bound"

        return Prepared(_synchronized(run, device), workload, verify, inputs=(x, weight))


def tier_includes(run_tier: str, first_tier: str) -> bool:
    """Whether a ``run_tier`` run includes what is timed from ``first_tier`` on (full includes quick)."""
    return TIERS.index(first_tier) <= TIERS.index(run_tier)


def computations() -> list[Computation]:
    """Every implementation in impls/ and every peer, implementations first, by name."""
    found = [
        Computation(name, impl.role, impl.description, implementation=impl)
        for name, impl in sorted(implementations().items())
    ]
    found += [Computation(name, peer.role, peer.description, peer=peer) for name, peer in peers().items()]
    return found


@dataclass
class Session:
    """One benchmark run's state beside the timings (what the JSON's ``sw`` key records)."""

    dtype: torch.dtype
    peak_gflops: float | None = None
    peak_gbps: float | None = None
    l2_flush: bool = False
    gpu_graph: bool = False
    cases: list[Case] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    not_run: list[dict] = field(default_factory=list)
    _peaks: dict[str, machine.Peaks] = field(default_factory=dict)

    def peaks(self, device: str) -> machine.Peaks:
        """The device's roofline peaks, probed once per session (or as given)."""
        if device not in self._peaks:
            self._peaks[device] = machine.peaks(torch.device(device), self.peak_gflops, self.peak_gbps)
        return self._peaks[device]

    def skip(self, computation: Computation, device: str, reason: str) -> None:
        self.not_run.append({"computation": computation.name, "device": device, "reason": reason})

    def measure(self, benchmark, computation: Computation, case: Case, device: str) -> BenchmarkRow:
        """Verify, time and record ``computation`` on ``case``: the row goes into the benchmark's
        ``extra_info``. A wrong result or a crash is recorded as a failure and raised (the run
        goes on with the other benchmarks)."""
        try:
            prepared = computation.prepare(case, self.dtype, device)
            first = prepared.run()  # also the warm-up: compilation, caches, allocator
            verified = prepared.verify(first)
        except Exception as error:  # a mismatch or a crash: recorded in the JSON, then reported by pytest
            self.failures.append(
                {"computation": computation.name, "device": device, "case": case.name, "error": f"{type(error).__name__}: {error}"}
            )
            raise
        row = BenchmarkRow.for_case(
            case,
            computation=computation.name,
            role=computation.role.value,
            baseline=computation.baseline,
            description=computation.description,
            device=device,
            execution=computation.execution_mode(device),
            threads=torch.get_num_threads() if device == "cpu" else None,
            dtype=str(self.dtype).removeprefix("torch."),
            useful_flops=useful_flops(case.spec(), case.input_shape),
            flops=prepared.workload.flops,
            compulsory_bytes=prepared.workload.compulsory_bytes,
            traffic_bytes=prepared.workload.traffic_bytes,
            setup_seconds=prepared.setup_seconds,
            verified=verified,
        )
        benchmark.group = f"{case.suite}/{case.name}"
        benchmark.extra_info.update(row.to_extra_info())
        if device == "cuda":  # CUDA events around the work, not a host sync per call (harness.gputime)
            work = getattr(prepared.run, "unsynchronized", prepared.run)
            last = gputime.time_on_gpu(benchmark, work, device, gputime.GpuTiming(self.l2_flush, self.gpu_graph))
        else:
            last = benchmark(prepared.run)
        row = row.with_determinism(outputs_equal(first, last))
        benchmark.extra_info.update(row.to_extra_info())
        try:  # what was timed is verified too: a replayed, cached or unfinished result fails here
            source = computation.implementation.source if computation.implementation else None
            integrity.check_timed_calls(prepared.run, prepared.verify, first, last, prepared.inputs, source, benchmark)
        except Exception as error:
            self.failures.append(
                {"computation": computation.name, "device": device, "case": case.name, "error": f"{type(error).__name__}: {error}"}
            )
            raise
        return row
