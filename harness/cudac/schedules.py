"""Schedule diversity for the fast host build: run a launch under several thread orders and
compare everything it wrote.

On a GPU the threads of a block run in no promised order between barriers; the fiber mode
runs them in one order (thread index), so a kernel whose result depends on that order (a
missing ``__syncthreads``, a tile overwritten before a slower thread read it) can pass by luck.
With more than one schedule active, each launch runs once per schedule from the same starting
memory, and the bytes of every buffer it may write (its non-const pointer arguments, found in
the live CPU tensors that hold them) must come out identical; a difference is a
``HostEmulationError`` naming the kernel, the schedule, the argument and the first element.

Schedules: ``forward`` (thread-index order, blocks in order), ``reverse`` (both reversed),
``shuffle[:seed]`` (a seeded permutation of each block's threads, blocks reversed). The first
schedule runs with shared memory poisoned with 0xFF bytes (NaN), the others with 0x7F; a
difference that the poison alone explains is reported as a read of shared memory no thread
wrote. Results are compared bit for bit, so run with data whose sums are exact in any order
(the checker's ``exact`` mode): float atomics in another order round differently.

Select schedules with ``with schedules("forward", "reverse", "shuffle:1"):`` or the
environment variable ``SW_HOST_SCHEDULES=forward,reverse,shuffle:1`` (e.g. for a ``swbench
check`` reproducer); the default is ``forward`` alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import gc
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.cudac.errors import HostEmulationError

#: Poison bytes of shared memory: the first schedule's (NaN in float and double) and the others'.
POISON, OTHER_POISON = 0xFF, 0x7F
ENVIRONMENT = "SW_HOST_SCHEDULES"
_CODES = {"forward": 0, "reverse": 1, "shuffle": 2}
_ELEMENT = {"float": np.float32, "double": np.float64, "int": np.int32, "int32_t": np.int32, "unsigned": np.uint32,
            "unsigned int": np.uint32, "long long": np.int64, "int64_t": np.int64}  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    name: str
    code: int
    seed: int = 0

    def __str__(self) -> str:
        return f"{self.name}:{self.seed}" if self.name == "shuffle" else self.name


FORWARD = Schedule("forward", 0)
ALL = (FORWARD, Schedule("reverse", 1), Schedule("shuffle", 2, 1))


@dataclass
class ScheduleCheck:
    """The schedules of a ``schedules()`` block, and the launches compared under them."""

    plan: tuple[Schedule, ...]
    #: (file, kernel) of every launch compared so far in the block.
    launches: list[tuple[str, str]] = field(default_factory=list)


_ACTIVE: contextvars.ContextVar[ScheduleCheck | None] = contextvars.ContextVar("swemu_schedules", default=None)


def parse_schedule(text: str) -> Schedule:
    name, _, seed = text.strip().partition(":")
    if name not in _CODES:
        raise ValueError(f"unknown schedule {text!r}; expected one of {sorted(_CODES)} (shuffle:SEED for a seed)")
    if seed and name != "shuffle":
        raise ValueError(f"schedule {name} takes no seed, got {text!r}")
    try:
        return Schedule(name, _CODES[name], int(seed) if seed else 0)
    except ValueError:
        raise ValueError(f"schedule {text!r}: the seed must be an integer") from None


def active_schedules() -> tuple[Schedule, ...]:
    """The schedules each launch runs under: the innermost ``schedules()`` block's, else
    ``$SW_HOST_SCHEDULES``, else forward alone."""
    active = _ACTIVE.get()
    if active is not None:
        return active.plan
    text = os.environ.get(ENVIRONMENT, "").strip()
    return tuple(parse_schedule(part) for part in text.split(",") if part.strip()) or (FORWARD,)


@contextlib.contextmanager
def schedules(*names: str | Schedule) -> Iterator[ScheduleCheck]:
    """Within the block, every fast host-build launch runs under each of ``names`` (default:
    forward, reverse, shuffle:1) and must write the same bytes under all of them; the yielded
    ``ScheduleCheck`` lists the launches compared."""
    plan = tuple(n if isinstance(n, Schedule) else parse_schedule(n) for n in names) or ALL
    check = ScheduleCheck(plan)
    token = _ACTIVE.set(check)
    try:
        yield check
    finally:
        _ACTIVE.reset(token)


# ---- the buffers a launch may write ----------------------------------------------------------


def _tensors_in(value, found: list) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        found.extend(v for v in value if isinstance(v, torch.Tensor))
    elif isinstance(value, dict):
        found.extend(v for v in value.values() if isinstance(v, torch.Tensor))


def _storages(tensors) -> list[tuple[int, int]]:
    import torch

    spans = set()
    for tensor in tensors:
        # Plain tensors only: subclasses (fake / functional tensors left by torch.compile) have no memory
        if type(tensor) in (torch.Tensor, torch.nn.Parameter) and tensor.device.type == "cpu" and not tensor.is_meta:
            try:
                storage = tensor.untyped_storage()
                if storage.nbytes():
                    spans.add((storage.data_ptr(), storage.nbytes()))
            except RuntimeError:  # no memory behind it: fake / functional tensors left by torch.compile
                continue
    return sorted(spans)


def _caller_tensors(depth: int = 16) -> list:
    """Tensors referenced from the callers' frames (where a launch's arguments come from)."""
    found: list = []
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            break
        for value in list(frame.f_locals.values()):
            _tensors_in(value, found)
        frame = frame.f_back
    return found


def _is_tensor(obj: object, tensor_type: type) -> bool:
    """isinstance that survives the heap's dead weak proxies (touching one raises ReferenceError)."""
    try:
        return isinstance(obj, tensor_type)
    except ReferenceError:
        return False


def _containing(spans: list[tuple[int, int]], address: int) -> tuple[int, int] | None:
    return next(((start, size) for start, size in spans if start <= address < start + size), None)


def written_buffers(file: str, signature, args: Sequence) -> list[tuple[int, int, list[tuple[str, int, str]]]]:
    """(start, bytes, [(argument, address, element type)]) of the tensor storage behind each
    non-null, non-const pointer argument; raises if one lies in no live CPU tensor."""
    wanted = [
        (param, int(arg))
        for param, arg in zip(signature.params, args)
        if param.is_pointer and arg and not param.const
    ]
    spans = _storages(_caller_tensors())
    if any(_containing(spans, address) is None for _, address in wanted):
        import torch

        with warnings.catch_warnings():  # isinstance on every object touches deprecated attributes
            warnings.simplefilter("ignore")
            spans = _storages([o for o in gc.get_objects() if _is_tensor(o, torch.Tensor)])
    buffers: dict[tuple[int, int], list] = {}
    for param, address in wanted:
        span = _containing(spans, address)
        if span is None:
            raise HostEmulationError(
                f"{file}: kernel {signature.name}: the schedule check compares what a launch writes, but argument "
                f"{param.name} (0x{address:x}) points into no live CPU tensor; pass tensor memory"
            )
        buffers.setdefault(span, []).append((param.name, address, param.ctype[:-1]))
    return [(start, size, names) for (start, size), names in sorted(buffers.items())]


def _snapshot(buffers) -> list[bytes]:
    return [ctypes.string_at(start, size) for start, size, _ in buffers]


def _restore(buffers, snapshot: list[bytes]) -> None:
    for (start, size, _), data in zip(buffers, snapshot):
        ctypes.memmove(start, data, size)


def _difference(buffers, expected: list[bytes], got: list[bytes]) -> str | None:
    """Which argument differs first, and how, or None when all bytes are equal."""
    for (start, size, names), want, have in zip(buffers, expected, got):
        if want == have:
            continue
        a, b = np.frombuffer(want, np.uint8), np.frombuffer(have, np.uint8)
        offsets = np.flatnonzero(a != b)
        # the argument whose pointer is the nearest at or below the first differing byte
        name, address, ctype = max((n for n in names if n[1] - start <= offsets[0]), key=lambda n: n[1], default=names[0])
        dtype = np.dtype(_ELEMENT.get(ctype, np.uint8))
        base = address - start
        index = (int(offsets[0]) - base) // dtype.itemsize
        element = slice(base + index * dtype.itemsize, base + (index + 1) * dtype.itemsize)
        first, second = (np.frombuffer(x[element], dtype)[0].item() for x in (want, have))
        elements = len({(int(o) - base) // dtype.itemsize for o in offsets})
        return f"argument {name}: {elements} elements differ, the first {name}[{index}]: {first!r} vs {second!r}"
    return None


def compare_schedules(
    file: str, signature, args: Sequence, plan: Sequence[Schedule], run: Callable[[Schedule, int], None]
) -> None:
    """Run the launch (``run(schedule, poison)``) under each schedule of ``plan`` from the same
    starting memory; leave the first schedule's result; raise if any result differs."""
    buffers = written_buffers(file, signature, args)
    active = _ACTIVE.get()
    if active is not None:
        active.launches.append((file, signature.name))
    before = _snapshot(buffers)
    run(plan[0], POISON)
    expected = _snapshot(buffers)
    for schedule in plan[1:]:
        _restore(buffers, before)
        run(schedule, OTHER_POISON)
        difference = _difference(buffers, expected, _snapshot(buffers))
        if difference is None:
            continue
        # Same order, other poison: if that alone changes the result, a thread read shared
        # memory no thread had written.
        _restore(buffers, before)
        run(plan[0], OTHER_POISON)
        uninitialised = _difference(buffers, expected, _snapshot(buffers))
        _restore(buffers, expected)
        if uninitialised is not None:
            raise HostEmulationError(
                f"{file}: kernel {signature.name}: reads shared memory that no thread wrote: the same schedule "
                f"({plan[0]}) with other poison bytes in shared memory wrote other results ({uninitialised})"
            )
        raise HostEmulationError(
            f"{file}: kernel {signature.name}: schedule dependence: thread order {schedule} wrote other results "
            f"than {plan[0]} ({difference}); a __syncthreads is missing or a result depends on thread order"
        )
    _restore(buffers, expected)
