"""What the benchmarks time: implementations and peers, made ready on a case.

``computations()`` lists every implementation from ``impls/`` and every peer as a
``Computation``; ``Computation.prepare(case, dtype, device)`` builds seeded inputs once and
returns a ``Prepared`` call to time, its workload by count, and a check of its result:
an implementation's output must match the reference within the error bound before it is
timed (timing a wrong answer is meaningless); a peer computes another operator and is not
compared. The pytest-benchmark side (timing, JSON) lives in ``tests/test_benchmarks.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.cases import Case
from harness.checking import CheckCase, bitwise_equal, describe_mismatch, make_inputs
from harness.peers import Peer, peers
from harness.perf import Workload, useful_flops
from harness.reference import error_bound, reference_forward
from harness.registry import Implementation, implementations
from harness.traffic import compulsory_bytes

KINDS = ("implementation", "peer")


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


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    if device.type != "cuda":
        return fn

    def run() -> object:
        result = fn()
        torch.cuda.synchronize(device)
        return result

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
    kind: str
    description: str
    implementation: Implementation | None = None
    peer: Peer | None = None

    @property
    def devices(self) -> tuple[str, ...]:
        return self.implementation.devices if self.implementation else ("cpu", "cuda")

    def not_benchmarked_reason(self, device: str) -> str | None:
        """Why this computation is not timed on ``device`` here, or None if it is."""
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
            return Prepared(_synchronized(prepared.run, device), workload, lambda result: "peer: computes another operator, not compared")

        impl = self.implementation
        traffic = impl.traffic(spec, case.input_shape, x.element_size()) if impl.traffic else None
        flops = useful_flops(spec, case.input_shape)
        workload = Workload(case.batch, flops, compulsory_bytes(spec, case.input_shape, x.element_size()), traffic)

        def run() -> object:
            with torch.no_grad():
                return impl(x, weight, spec)

        def verify(result: object) -> str:
            x64, w64 = x.double(), weight.double()
            expected = reference_forward(x64, w64, spec)
            bounds = error_bound(x64, w64, spec, dtype)
            problems = [
                f"branch {label}: {message}"
                for label, got, ref, bound in zip("hvi", result, expected, bounds)
                if (message := describe_mismatch(got, ref, bound, dtype))
            ]
            if problems:
                raise ResultMismatch(f"{self.name} on {case.name}: " + "; ".join(problems))
            return "matches the reference within the error bound"

        return Prepared(_synchronized(run, device), workload, verify)


def computations() -> list[Computation]:
    """Every implementation in impls/ and every peer, implementations first, by name."""
    found = [
        Computation(name, "implementation", impl.description, implementation=impl)
        for name, impl in sorted(implementations().items())
    ]
    found += [Computation(name, "peer", peer.description, peer=peer) for name, peer in peers().items()]
    return found
