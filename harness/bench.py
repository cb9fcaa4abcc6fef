"""What the benchmarks time and how: items (a layer computation on a case, a network on a batch,
a training step) made ready, verified, timed by pytest-benchmark and recorded as a typed row
(``harness.results``).

An item is anything with the ``Item`` fields and a ``prepare(session)`` that returns a
``Prepared``: the call to time, a check of its result, and the row to record. Layer items are
made here (``layer_items``): every implementation from ``impls/`` and every peer, as a
``Computation`` with its declared role; network and training items by ``harness.models.bench``.
An implementation's output must match the reference within the error bound before it is timed
(timing a wrong answer is meaningless); a PyTorch way is held to the bound of its form (its
three branches, or their sum, or a deployed layer's sum with the identity:
``harness.reference.summed_bound``); another operator to its own float64 evaluation
(``harness.peers.checked_convs``). The float64 evaluations go through a ``References``: each is
computed once per input bits however often it is checked, and shared by the items given the same one.

``Session`` runs one benchmark (``Session.measure``: prepare, verify, time, record) and keeps
the run's record beside the timings (``harness.results.RunRecord``: failures, what was not run
and why, the suites that ran, the probed peaks). The pytest plugin (``harness.bench_plugin``)
owns one per pytest session; the test functions only call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from harness import eligibility, gputime, machine, timelimit
from harness.cases import Case, Tier, load_cases
from harness.eligibility import Purpose
from harness.checking import (CheckCase, References, bitwise_equal, compare_with_reference, describe_mismatch,
                              integrity, make_inputs)  # fmt: skip
from harness.peers import Peer, PreparedPeer, peers
from harness.perf import Workload, useful_flops
from harness.registry import Implementation, Role, implementations
from harness.results import BenchmarkRow, Failure, NotRun, Row, RunRecord
from harness.traffic import compulsory_bytes

#: Seconds one benchmark item (verification, timing, the check of what was timed) may take by
#: default: a hang is stopped, while the slowest honest item is not (a full-tier B=64 network
#: training item on a 2-core CPU: three ~70 s steps after a float64 verification of minutes).
BENCH_TIMEOUT = 1800.0


class ResultMismatch(AssertionError):
    """A computation's output on a benchmark case differs from the reference."""


@dataclass(frozen=True)
class Prepared:
    """One timed call on fixed inputs, its check and its row. ``run`` returns when the result
    is complete (it synchronizes a GPU), so host-clock timing of it is correct."""

    run: Callable[[], object]
    #: raises an AssertionError (ResultMismatch, ...) if ``run``'s output is wrong; returns what was verified
    verify: Callable[[object], str]
    #: the row to record, without ``verified`` and ``deterministic`` (the session fills them in)
    row: Callable[[str], Row]
    #: preparation that is not timed (e.g. torch.compile), in seconds
    setup_seconds: float | None = None
    #: the implementation's inputs (x first) that ``run`` reads, for the checks after timing
    #: (``harness.checking.integrity.timed_calls_problems``); empty where nothing is probed
    inputs: tuple[torch.Tensor, ...] = ()
    #: the file of the implementation timed (blamed for a replaced clock)
    source: object = None
    #: fixed rounds of one call (pytest-benchmark's pedantic mode: long calls), or None: its calibration
    rounds: int | None = None
    #: whether two calls should give the same result (not a training step: it changes the weights)
    repeatable: bool = True
    #: the row completed from what the timed rounds recorded (a comparison's per-round times),
    #: called right after the timing; None: the row is complete before it
    finish: Callable[[Row], Row] | None = None


class Item(Protocol):
    """One benchmark: what the plugin parametrizes over and ``Session.measure`` runs."""

    kind: str  # a harness.results.KINDS value
    id: str  # the test id
    computation: str
    device: str
    case_name: str | None  # None: the item stands for every case it would have run (it is skipped)
    suite: str | None
    group: str  # pytest-benchmark's group
    skip: str | None  # why it is not run here (None: it is)

    def prepare(self, session: Session) -> Prepared: ...


@dataclass(frozen=True)
class Selection:
    """What a benchmark run asks for (the plugin's options)."""

    suites: tuple[str, ...] | None
    tier: str
    devices: tuple[str, ...]
    dtype: torch.dtype


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
    """Bitwise equality of two results (a tensor or a tuple of results: a comparison's round)."""
    if isinstance(first, tuple) or isinstance(second, tuple):
        return (isinstance(first, tuple) and isinstance(second, tuple) and len(first) == len(second)
                and all(outputs_equal(a, b) for a, b in zip(first, second)))  # fmt: skip
    return bitwise_equal(first, second)


@dataclass(frozen=True)
class Computation:
    """An implementation or a peer, as the layer benchmarks see it."""

    name: str
    role: Role
    description: str
    implementation: Implementation | None = None
    peer: Peer | None = None
    #: the implementation's whole deployed layer (``Implementation.deployed``) as a layer
    #: computation, not its operator: one output h + v + i + x, like the deployed PyTorch forms
    deployed: bool = False

    @property
    def baseline(self) -> bool:
        return self.peer is not None and self.peer.baseline

    @property
    def form(self) -> str:
        """What it computes (``FORMS``): a deployed layer's one output, or the operator's."""
        return "deployed" if self.deployed or (self.peer is not None and self.peer.deployed) else "operator"

    @property
    def devices(self) -> tuple[str, ...]:
        return self.implementation.devices if self.implementation else ("cpu", "cuda")

    def not_benchmarked_reason(self, device: str, tier: str = "full", dtype: torch.dtype | None = None) -> str | None:
        """Why this computation is not timed on ``device`` in ``dtype`` in a ``tier`` run here, or None if it is."""
        if self.peer is not None and not Tier.parse(tier).includes(self.peer.tier):
            return f"timed from the {self.peer.tier} tier on: {self.peer.tier_reason}"
        if self.peer is not None and (why := self.peer.unavailable(device)) is not None:
            return why
        return eligibility.reason(self.implementation, device, dtype, Purpose.LAYER)

    def execution_mode(self, device: str) -> str:
        return self.implementation.execution_mode(device) if self.implementation else f"torch on {device}"

    def prepare(self, case: Case, dtype: torch.dtype, device: str, references: References | None = None) -> Prepared:
        """The verified call of this computation on ``case`` and its row; its checks' float64
        evaluations come from ``references`` (shared by the callers that pass the same one; a
        new one for this call's repeated checks by default)."""
        device = torch.device(device)
        references = references if references is not None else References()
        dtype_name = str(dtype).removeprefix("torch.")
        inputs = make_inputs(CheckCase(case, dtype_name, "float", device=str(device)), nan_pruned=True)
        x, weight, spec = inputs.x, inputs.weight, case.spec()

        def row(verified: str, workload: Workload, setup_seconds: float | None) -> BenchmarkRow:
            return BenchmarkRow.for_case(
                case, computation=self.name, role=self.role.value, baseline=self.baseline,
                description=self.description, device=str(device), execution=self.execution_mode(str(device)),
                threads=torch.get_num_threads() if device.type == "cpu" else None, dtype=dtype_name,
                useful_flops=useful_flops(spec, case.input_shape), flops=workload.flops,
                compulsory_bytes=workload.compulsory_bytes, traffic_bytes=workload.traffic_bytes,
                setup_seconds=setup_seconds, verified=verified, form=self.form,
            )  # fmt: skip

        if self.peer is not None:
            prepared = self.peer.prepare(case, x, weight)
            workload = Workload(case.batch, prepared.flops, prepared.compulsory_bytes, None)
            return Prepared(
                _synchronized(prepared.run, device), self._peer_verify(case, x, weight, dtype, prepared, references),
                lambda verified: row(verified, workload, prepared.setup_seconds), prepared.setup_seconds,
            )  # fmt: skip

        impl = self.implementation
        if self.deployed:
            return self._prepare_deployed(case, x, weight, references, row)
        traffic = impl.traffic(spec, case.input_shape, x.element_size()) if impl.traffic else None
        flops = useful_flops(spec, case.input_shape)
        workload = Workload(case.batch, flops, compulsory_bytes(spec, case.input_shape, x.element_size()), traffic)

        def run() -> object:
            with torch.no_grad():
                return impl(x, weight, spec)

        def verify(result: object) -> str:
            problems = compare_with_reference(result, references.expected(x, weight, spec, exact=False), dtype)
            if problems:
                raise ResultMismatch(f"{self.name} on {case.name}: " + "; ".join(problems))
            return "matches the reference within the error bound"

        return Prepared(_synchronized(run, device), verify, lambda verified: row(verified, workload, None),
                        inputs=(x, weight), source=impl.source)  # fmt: skip

    def _prepare_deployed(self, case: Case, x: torch.Tensor, weight: torch.Tensor, references: References,
                          row: Callable[[str, Workload, float | None], BenchmarkRow]) -> Prepared:  # fmt: skip
        """The implementation's deployed layer on a layer case: every channel a rep channel, no
        ghost channels, the folded branch scales and the following BatchNorm the identity (ones,
        zero bias and shift; folding real ones changes values, not work, as for the deployed
        PyTorch forms), so its one output is h + v + i + x, checked within that sum's bound.
        x is channels_last, as a deployed network hands it over (converted once, not timed)."""
        spec, impl = case.spec(), self.implementation
        x = x.contiguous(memory_format=torch.channels_last)
        channels = spec.channels
        ones, zeros = x.new_ones(channels), x.new_zeros(channels)
        rep, ghost = torch.arange(channels, device=x.device), torch.empty(0, dtype=torch.long, device=x.device)
        branch_scale = x.new_ones(3, channels)

        def run() -> object:
            with torch.no_grad():
                return impl.deployed(x, weight, spec, branch_scale, zeros, ones, zeros, rep, ghost)

        def verify(result: object) -> str:
            if not isinstance(result, torch.Tensor) or result.shape != x.shape or result.dtype != x.dtype:
                got = f"{tuple(result.shape)} {result.dtype}" if isinstance(result, torch.Tensor) else type(result).__name__
                raise ResultMismatch(f"{self.name} on {case.name}: expected one {tuple(x.shape)} {x.dtype} output (h + v + i + x), got {got}")
            expected, bound = references.residual_sum(x, weight, spec)  # of x as it is now (the probes refill it)
            if message := describe_mismatch(result, expected, bound, x.dtype):
                raise ResultMismatch(f"{self.name} on {case.name}: h + v + i + x: {message}")
            return "h + v + i + x matches the reference within its error bound"

        item = x.element_size()
        compulsory = item * (2 * x.numel() + weight.numel() + 6 * channels)  # x in, the output out, the parameters
        workload = Workload(case.batch, useful_flops(spec, case.input_shape), compulsory, None)
        return Prepared(_synchronized(run, x.device), verify, lambda verified: row(verified, workload, None),
                        inputs=(x, weight), source=impl.source)  # fmt: skip

    def _peer_verify(self, case: Case, x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype,
                     prepared: PreparedPeer, references: References) -> Callable[[object], str]:  # fmt: skip
        """A PyTorch way against the SW reference with the bound of its form: its three branches
        within ``error_bound``, their sum (one output) within ``summed_bound``, or a deployed
        form's h + v + i + x within ``summed_bound(..., residual=True)``; another operator by its
        own check (``PreparedPeer.verify``)."""
        if prepared.verify is not None:
            return prepared.verify
        if self.role is not Role.PYTORCH_WAY:
            raise ValueError(f"peer {self.name}: another operator must check its own result (PreparedPeer.verify)")
        spec = case.spec()

        def verify(result: object) -> str:
            outputs = result if isinstance(result, tuple) else (result,)
            if prepared.residual_sum:
                if len(outputs) != 1:
                    raise ResultMismatch(f"{self.name} on {case.name}: a deployed form returns one output (h + v + i + x), got {len(outputs)}")
                expected, bound = references.residual_sum(x, weight, spec)
                message = describe_mismatch(outputs[0], expected, bound, dtype)
                problems, what = ([f"h + v + i + x: {message}"] if message else []), "h + v + i + x matches the reference within its error bound"
            elif len(outputs) == 3:
                problems = compare_with_reference(outputs, references.expected(x, weight, spec, exact=False), dtype)
                what = "matches the reference within the error bound"
            elif len(outputs) == 1:
                message = describe_mismatch(outputs[0], sum(references.expected(x, weight, spec, exact=False).branches),
                                            references.summed(x, weight, spec), dtype)  # fmt: skip
                problems, what = ([f"the branches' sum: {message}"] if message else []), "the branches' sum matches the reference within its error bound"
            else:
                problems, what = [f"expected the three branches or their sum, got {len(outputs)} outputs"], ""
            if problems:
                raise ResultMismatch(f"{self.name} on {case.name}: " + "; ".join(problems))
            return what

        return verify


#: what a layer computation computes: the SW operator (three branches, or their sum), or a
#: deployed layer (one output h + v + i + x, the identity residual folded in). Speed is compared
#: within a form: a deployed layer against the deployed PyTorch forms, the operator against the rest.
FORMS = ("operator", "deployed")

#: the name of an implementation's deployed layer as a layer computation (``Computation.deployed``)
DEPLOYED_SUFFIX = "+deployed"


def computations() -> list[Computation]:
    """Every implementation in impls/ (and, beside one that provides it, its deployed layer:
    ``<name>+deployed``) and every peer, implementations first, by name."""
    found = []
    for name, impl in sorted(implementations().items()):
        found.append(Computation(name, impl.role, impl.description, implementation=impl))
        if impl.deployed is not None:
            found.append(Computation(name + DEPLOYED_SUFFIX, impl.role, f"{name}'s deployed layer in one pass (h + v + i + x)",
                                     implementation=impl, deployed=True))  # fmt: skip
    found += [Computation(name, peer.role, peer.description, peer=peer) for name, peer in peers().items()]
    return found


@dataclass(frozen=True)
class LayerItem:
    """A computation on a layer case and a device (``case`` None: skipped for every case)."""

    computation_: Computation
    device: str
    case: Case | None
    skip: str | None = None
    kind = "layer"

    @property
    def computation(self) -> str:
        return self.computation_.name

    @property
    def case_name(self) -> str | None:
        return self.case.name if self.case else None

    @property
    def suite(self) -> str | None:
        return self.case.suite if self.case else None

    @property
    def group(self) -> str:
        return f"{self.case.suite}/{self.case.name}" if self.case else ""

    @property
    def id(self) -> str:
        tail = f"-{self.case.suite}-{self.case.name}" if self.case else ""
        return f"{self.computation}-{self.device}{tail}"

    def prepare(self, session: Session) -> Prepared:
        return self.computation_.prepare(self.case, session.dtype, self.device, session.references)


def layer_cases(selection: Selection) -> list[Case]:
    """The layer cases of the selected suites in the run's tier."""
    tier = Tier.parse(selection.tier)
    suites = list(selection.suites) if selection.suites else None
    return [case for case in load_cases(suites=suites, measures="inference") if tier.includes(case.tier)]


def layer_items(selection: Selection) -> list[LayerItem]:
    """Every computation on every selected layer case and device, case by case (a case's
    computations run one after another: they share its float64 reference, ``Session.references``,
    and see the same machine); one that cannot be timed here is one skipped item per
    (computation, device), with the reason, first."""
    cases = layer_cases(selection)
    if not cases:
        return []
    skipped, timed = [], []
    for computation in computations():
        for device in selection.devices:
            if device not in computation.devices:
                continue
            reason = computation.not_benchmarked_reason(device, selection.tier, selection.dtype)
            if reason is not None:
                skipped.append(LayerItem(computation, device, None, reason))
            else:
                timed.append((computation, device))
    return skipped + [LayerItem(computation, device, case) for case in cases for computation, device in timed]


@dataclass
class Session:
    """One benchmark run's state beside the timings: the run's record (``record``) and the
    roofline peaks probed per device."""

    dtype: torch.dtype
    record: RunRecord
    peak_gflops: float | None = None
    peak_gbps: float | None = None
    l2_flush: bool = False
    gpu_graph: bool = False
    time_limit: float | None = BENCH_TIMEOUT
    #: the float64 evaluations the verifications share (the items of a case run one after another)
    references: References = field(default_factory=lambda: References(size=6))
    _peaks: dict[str, machine.Peaks] = field(default_factory=dict)
    #: item id -> the failures of its parts (``part_failed``), which its reproducer reruns too
    _parts: dict[str, list[Failure]] = field(default_factory=dict)

    def peaks(self, device: str) -> machine.Peaks:
        """The device's roofline peaks: those probed at the start of the run (or as given)."""
        if device not in self._peaks:
            self._peaks[device] = machine.peaks(torch.device(device), self.peak_gflops, self.peak_gbps)
            self.record.probes.setdefault("start", {})[device] = self._peaks[device].as_dict()
        return self._peaks[device]

    def probe_end(self, devices: Sequence[str]) -> None:
        """Probe the peaks again after the last benchmark (the machine's drift over the run)."""
        for device in devices:
            if device in self._peaks:
                peaks = machine.peaks(torch.device(device), self.peak_gflops, self.peak_gbps)
                self.record.probes.setdefault("end", {})[device] = peaks.as_dict()

    def skipped(self, item: Item) -> None:
        """Record an item that was selected but not run here."""
        entry = NotRun(item.computation, item.device, item.skip or "skipped", item.kind, item.case_name)
        if entry not in self.record.not_run:
            self.record.not_run.append(entry)

    def _failed(self, item: Item, error: BaseException) -> None:
        self.record.failures.append(
            Failure(item.computation, item.device, item.case_name or "", f"{type(error).__name__}: {error}", item.kind)
        )

    def part_failed(self, item: Item, computation: str, case: str, error: BaseException) -> None:
        """Record the failure of one part of ``item`` (a network of a comparison), blamed on that
        part: the item goes on with the others."""
        failure = Failure(computation, item.device, case, f"{type(error).__name__}: {error}", item.kind)
        self.record.failures.append(failure)
        self._parts.setdefault(item.id, []).append(failure)

    def reproduce(self, item: Item, command: str) -> None:
        """Attach the command that reruns ``item`` alone to its failures and its parts' (the plugin knows it)."""
        parts = self._parts.get(item.id, [])
        self.record.failures[:] = [
            replace(f, reproducer=command)
            if not f.reproducer and ((f.computation, f.device, f.case, f.kind) == (item.computation, item.device, item.case_name or "", item.kind)
                                     or f in parts)
            else f
            for f in self.record.failures
        ]  # fmt: skip

    def _ran(self, item: Item) -> None:
        if item.suite and item.suite not in self.record.suites:
            self.record.suites.append(item.suite)
            self.record.suites.sort()

    def measure(self, benchmark, item: Item) -> Row:
        """Verify, time and record ``item`` within ``time_limit`` seconds: the row goes into the
        benchmark's ``extra_info``. A wrong result, a crash or a hang past the limit is recorded
        as a failure and raised (the run goes on with the other benchmarks)."""
        try:
            with timelimit.time_limit(self.time_limit, "the benchmark item (--bench-timeout)"):
                return self._measure(benchmark, item)
        except timelimit.TimeLimitExceeded as error:
            benchmark.has_error = True  # pytest-benchmark's flag: a half-timed item stays out of the JSON
            self._failed(item, error)
            raise TimeoutError(str(error)) from None

    def _measure(self, benchmark, item: Item) -> Row:
        self._ran(item)
        try:
            prepared = item.prepare(self)
            first = prepared.run()  # also the warm-up: compilation, caches, allocator
            row = prepared.row(prepared.verify(first))
        except Exception as error:  # a mismatch or a crash: recorded in the JSON, then reported by pytest
            self._failed(item, error)
            raise
        benchmark.group = item.group
        benchmark.extra_info.update(row.to_extra_info())
        if prepared.rounds is not None:
            last = benchmark.pedantic(prepared.run, rounds=prepared.rounds, iterations=1, warmup_rounds=0)
        elif item.device == "cuda":  # CUDA events around the work, not a host sync per call (harness.gputime)
            work = getattr(prepared.run, "unsynchronized", prepared.run)
            last = gputime.time_on_gpu(benchmark, work, item.device, gputime.GpuTiming(self.l2_flush, self.gpu_graph))
        else:
            last = benchmark(prepared.run)
        if prepared.finish is not None:
            try:
                row = prepared.finish(row)
            except Exception as error:
                self._failed(item, error)
                raise
            benchmark.extra_info.update(row.to_extra_info())
        if prepared.repeatable:
            row = row.with_determinism(outputs_equal(first, last))
            benchmark.extra_info.update(row.to_extra_info())
        try:  # what was timed is verified too: a replayed, cached or unfinished result fails here
            integrity.check_timed_calls(prepared.run, prepared.verify, first, last, prepared.inputs, prepared.source, benchmark)
        except Exception as error:
            self._failed(item, error)
            raise
        return row
