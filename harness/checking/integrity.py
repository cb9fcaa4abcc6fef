"""Anti-cheat: the implementation under test is untrusted code that runs inside the harness.

On leaderboards built on the same idea (gpu-mode's reference kernels, KernelBench) submissions
have passed checks, or been timed at the cost of a dictionary lookup, by replaying an earlier
call's result, returning outputs computed lazily or on another thread or CUDA stream, writing
into their inputs, or patching the timer or the checker. This module owns the tests for each:

- ``output_problems``: outputs must be plain ``torch.Tensor`` objects (no lazy subclass) that
  share no memory with the inputs nor with an earlier call's outputs (still held, so the
  allocator cannot have reused them);
- ``settled``: a snapshot of the outputs taken when the call returns, before any device
  synchronization, and whether they changed afterwards (work still running);
- ``Guard``: a snapshot of the functions the timing and the checking rely on (``time``'s clocks,
  the reference, the comparison), taken when a harness module is imported, before any
  implementation is; ``Guard.tampered()`` names what was replaced since, and by which file, and
  puts the originals back so the other implementations are checked honestly.

A second call on the same input buffers refilled with other values (``probe_inputs``: x
negated, whose exact answer is the negated reference) catches a result cached by input address.
"""

from __future__ import annotations

import inspect
import threading
import time
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: ``time``'s clocks: pytest-benchmark times with ``time.perf_counter``.
CLOCKS = ("perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns", "process_time")
#: What a CUDA timing relies on (patched to a no-op, unfinished work looks fast).
CUDA_FUNCTIONS = ("synchronize", "current_stream", "Event", "Stream")


def _plain_tensors(result: object) -> list[object]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _byte_range(tensor: torch.Tensor) -> tuple[int, int, torch.device]:
    """The bytes a tensor's elements span (its view of the storage, not the whole storage)."""
    start = tensor.data_ptr()
    if tensor.numel() == 0:
        return start, start, tensor.device
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()) if size > 0)
    return start, start + (last + 1) * tensor.element_size(), tensor.device


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    (a0, a1, da), (b0, b1, db) = _byte_range(a), _byte_range(b)
    return da == db and a0 < b1 and b0 < a1


def output_problems(
    result: object, inputs: Mapping[str, torch.Tensor], earlier: Sequence[torch.Tensor] = (), labels: str = "hvi"
) -> list[str]:
    """What is wrong with the outputs themselves: a tensor subclass (its values may be computed
    only when read), or memory shared with an input or with an earlier call's outputs."""
    problems = []
    for label, out in zip(labels, _plain_tensors(result)):
        if type(out) is not torch.Tensor:
            problems.append(
                f"output {label} is a {type(out).__module__}.{type(out).__qualname__}, not a plain torch.Tensor "
                "(a subclass can compute its values lazily, when read)"
            )
            continue
        for name, tensor in inputs.items():
            if _overlap(out, tensor):
                problems.append(f"output {label} shares memory with the input {name}")
        if any(_overlap(out, old) for old in earlier if isinstance(old, torch.Tensor)):
            problems.append(
                f"output {label} is the memory of an earlier call's output (a replayed result, or one that "
                "overwrites what the caller still holds)"
            )
    return problems


@dataclass(frozen=True)
class Settled:
    """The outputs as they were when the call returned, and whether any changed afterwards."""

    snapshot: tuple[torch.Tensor, ...]
    changed: tuple[str, ...]


def settled(result: object, labels: str = "hvi", wait_seconds: float = 0.05) -> Settled:
    """Copy the outputs the moment the call returns (on the current CUDA stream, with no device
    synchronization: work left on another stream is not finished yet), then synchronize, wait
    a little and compare: an output that changed was still being written after the call."""
    outputs = [out for out in _plain_tensors(result) if isinstance(out, torch.Tensor)]
    snapshot = tuple(torch.Tensor.clone(out.detach().as_subclass(torch.Tensor)) for out in outputs)
    for out in outputs:
        if out.device.type == "cuda":
            torch.cuda.synchronize(out.device)
    if threading.active_count() > 1 or any(out.device.type == "cuda" for out in outputs):
        time.sleep(wait_seconds)  # let a thread left running by the call show itself
    changed = tuple(
        label
        for label, out, copy in zip(labels, outputs, snapshot)
        if not _same_bits(out.detach().as_subclass(torch.Tensor), copy)
    )
    return Settled(snapshot, changed)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.shape == b.shape and torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))


def poison(result: object) -> None:
    """Overwrite the outputs the harness is done with by NaN: a later call that hands them back
    (replays them) returns NaN."""
    for out in _plain_tensors(result):
        if type(out) is torch.Tensor and out.is_floating_point():
            out.detach().fill_(float("nan"))


def probe_inputs(x: torch.Tensor) -> None:
    """Refill x in place (same buffer, same address) with -x: the operator is linear in x and
    negation is exact, so the answer is exactly the negated reference. A result cached by input
    address is the old, un-negated one."""
    x.neg_()


@dataclass(frozen=True)
class Tampering:
    """A function the harness relies on that is no longer the one it imported."""

    target: str
    replacement: str
    #: the file that defined the replacement, when it is known
    source: Path | None

    def by(self, files: Iterable[Path]) -> bool:
        """Whether the replacement comes from one of ``files`` (an implementation's file or package)."""
        if self.source is None:
            return False
        for file in files:
            folder = file.parent if file.name == "__init__.py" else None
            if self.source == file or (folder is not None and folder in self.source.parents):
                return True
        return False

    @property
    def key(self) -> tuple[str, Path | None]:
        """What was replaced and by whose file: two files replacing one clock are two findings,
        each blamed on its own file."""
        return self.target, self.source

    def message(self) -> str:
        where = f" defined in {self.source}" if self.source else " (where it was defined is unknown)"
        return f"{self.target} was replaced by {self.replacement}{where}"


def _source_of(obj: object) -> Path | None:
    try:
        file = inspect.getsourcefile(obj) or inspect.getfile(obj)  # type: ignore[arg-type]
    except (TypeError, OSError):
        code = getattr(getattr(obj, "__func__", obj), "__code__", None)
        file = code.co_filename if code else None
    return Path(file).resolve() if file and not file.startswith("<") else None


def _describe(obj: object) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{type(obj).__name__} {name}"


@dataclass
class Guard:
    """The functions a check or a timing relies on, as they were at ``Guard.of`` (module import,
    before any implementation), and the replacements found since (kept, so the implementation
    that made one is blamed even when another's check found it first)."""

    originals: dict[tuple[object, str], object]
    found: dict[tuple[str, Path | None], Tampering] = field(default_factory=dict)

    @classmethod
    def of(cls, *modules: types.ModuleType, names: Mapping[types.ModuleType, Sequence[str]] | None = None) -> Guard:
        """Guard every function and class defined in ``modules`` (or only ``names[module]``)."""
        originals: dict[tuple[object, str], object] = {}
        for module in modules:
            chosen = (names or {}).get(module)
            for name, value in vars(module).items():
                if chosen is not None and name not in chosen:
                    continue
                if chosen is not None or (not name.startswith("__") and callable(value)):
                    originals[(module, name)] = value
        return cls(originals)

    def tampered(self) -> list[Tampering]:
        """Every replacement found so far (new ones are put back, so the rest of the run is honest)."""
        for (owner, name), original in self.originals.items():
            now = getattr(owner, name, None)
            if now is not original:
                target = f"{getattr(owner, '__name__', owner)}.{name}"
                found = Tampering(target, _describe(now), _source_of(now))
                self.found.setdefault(found.key, found)
                setattr(owner, name, original)
        for name in CLOCKS:  # a clock replaced before the guard was made is still not a builtin of time
            clock = getattr(time, name)
            if not (isinstance(clock, types.BuiltinFunctionType) and clock.__name__ == name and clock.__self__ is time):
                found = Tampering(f"time.{name}", _describe(clock), _source_of(clock))
                self.found.setdefault(found.key, found)
        return list(self.found.values())


def timing_guard() -> Guard:
    """The clocks and the CUDA synchronization: what a timing relies on."""
    return Guard.of(time, torch.cuda, names={time: CLOCKS, torch.cuda: CUDA_FUNCTIONS})


class TimedCallsCheat(AssertionError):
    """What was timed is not what was verified (a replayed or cached result, a patched clock)."""


def check_timed_calls(
    run, verify, first: object, last: object, inputs: Sequence[torch.Tensor], source: Path | None = None, benchmark=None
) -> None:
    """After a benchmark's timing: its last timed result must not be the memory of the first
    (verified) call's nor of an input, the clocks must be the real ones (pytest-benchmark's
    included; a replacement is blamed on the implementation whose ``source`` file made it, or on
    every one when its maker is unknown), and one more call on the same input buffers refilled with -x, the last result
    poisoned, must verify (``verify`` computes the reference of the inputs as they are then);
    x is put back afterwards. Raises TimedCallsCheat or the verification's own error."""
    problems = output_problems(last, dict(zip(("x", "weight"), inputs)), _plain_tensors(first)) if inputs else []
    problems += [t.message() for t in _TIMING.tampered() if t.source is None or t.by([source] if source else [])]
    timer = getattr(benchmark, "_timer", None)  # pytest-benchmark's clock (no public handle)
    if timer is not None and not _real_clock(timer):
        problems.append(f"pytest-benchmark's timer is {_describe(timer)} defined in {_source_of(timer)}, not a clock of time")
    if problems:
        raise TimedCallsCheat("the timed calls cannot be trusted: " + "; ".join(problems))
    if not inputs:
        return
    try:
        verify(last)
    except AssertionError as error:
        raise TimedCallsCheat(f"the last timed call's result is wrong (the verified first call was right): {error}") from None
    poison(last)
    probe_inputs(inputs[0])
    try:
        verify(run())
    except AssertionError as error:
        raise TimedCallsCheat(
            f"a call after timing, on the same input buffers refilled with -x, is wrong (timed calls may have "
            f"returned a result cached by input address): {error}"
        ) from None
    finally:
        probe_inputs(inputs[0])


def _real_clock(clock: object) -> bool:
    return isinstance(clock, types.BuiltinFunctionType) and clock.__self__ is time and clock.__name__ in CLOCKS


#: The clocks as imported, before any implementation (see ``Guard``).
_TIMING = timing_guard()

