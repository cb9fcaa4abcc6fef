"""Sanitized host builds, the part that runs in the sanitized process: the sanitizers'
compiler flags and runtimes, reading their reports, and turning a report into a
``SanitizerError`` (the child processes and the command line are ``harness.cudac.sanitizers``).

Two builds of a ``.cu`` beside the fast one, both with a real OS thread per CUDA thread
(``host_runtime.h``'s THREADS mode) and every block's shared memory its own allocations:

- ``thread``: ``-fsanitize=thread``. ThreadSanitizer sees the barrier (acquire/release atomics,
  see ``host_runtime.h``) and nothing else that orders a block's threads, so two accesses to the same shared
  or global memory between barriers, at least one a write and not both atomic, are a race.
- ``address``: ``-fsanitize=address``. Every shared allocation is of exactly the declared size,
  so an access one element outside a ``__shared__`` array or the dynamic shared memory, or
  outside a tensor, is a heap-buffer-overflow.

A sanitizer's runtime must be the first library of its process: the builds run in a Python
process that preloads it (``LD_PRELOAD``) with ``SW_HOST_SANITIZER`` set. There
``harness.cudac.load_module(path, "cpu")`` builds the sanitized variant, and each launch reads
the sanitizer's log (reports go to a file, the process carries on after one) and turns a new
report into a ``SanitizerError`` naming the kernel, the kind of bug and the ``.cu`` line.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.cudac.compiler import host_compiler
from harness.cudac.errors import HostEmulationError

ENVIRONMENT = "SW_HOST_SANITIZER"
LOG_ENVIRONMENT = "SW_HOST_SANITIZER_LOG"


@dataclass(frozen=True)
class Sanitizer:
    name: str
    title: str  # as its reports name it
    flag: str
    runtime: str  # the shared library to preload
    init_symbol: str  # a symbol only its runtime defines
    options_variable: str
    options: str


SANITIZERS = {
    "thread": Sanitizer(
        "thread", "ThreadSanitizer", "-fsanitize=thread", "libtsan.so", "__tsan_init", "TSAN_OPTIONS",
        "halt_on_error=0 report_signal_unsafe=0 suppress_equal_addresses=0",
    ),
    "address": Sanitizer(
        "address", "AddressSanitizer", "-fsanitize=address", "libasan.so", "__asan_init", "ASAN_OPTIONS",
        "halt_on_error=0 detect_leaks=0 detect_odr_violation=0",
    ),
}  # fmt: skip


def _sanitizer(name: str) -> Sanitizer:
    try:
        return SANITIZERS[name]
    except KeyError:
        raise ValueError(f"unknown sanitizer {name!r}; expected one of {sorted(SANITIZERS)}") from None


def build_flags(name: str) -> tuple[str, ...]:
    """Compiler flags of a sanitized host build: line tables, no optimisation (the shapes are
    small: compiling is most of the cost; every access stays where the source has it). The ASan
    build has no guard bytes around shared memory (exact-size allocations, so one element past
    the end is reported) and recovers from a report; the TSan build keeps the guards (its
    allocator packs blocks tightly: a write past the end would corrupt a neighbour)."""
    sanitizer = _sanitizer(name)
    extra = ("-fsanitize-recover=address", "-DSWEMU_GUARD=0") if name == "address" else ()
    return (
        "-std=c++20", "-O0", "-g1", "-fno-omit-frame-pointer", "-fPIC", "-shared", "-pthread", "-fno-fast-math",
        "-ffp-contract=off", sanitizer.flag, *extra,
    )  # fmt: skip


def _compiler_library(library: str) -> Path | None:
    compiler = host_compiler()
    if compiler is None:
        return None
    done = subprocess.run([compiler, f"-print-file-name={library}"], capture_output=True, text=True)
    path = Path(done.stdout.strip())
    return path.resolve() if done.returncode == 0 and path.is_absolute() and path.exists() else None


def runtime_library(name: str) -> Path | None:
    """The sanitizer's runtime library of the host compiler, or None."""
    return _compiler_library(_sanitizer(name).runtime)


def unavailable_reason(name: str) -> str | None:
    """Why the ``name`` sanitizer build cannot run here, or None."""
    if host_compiler() is None:
        return "no C++ compiler for the host build (set CXX or install g++)"
    if runtime_library(name) is None:
        return f"the host compiler has no {_sanitizer(name).runtime} (install its sanitizer runtime)"
    return None


def runtime_loaded(name: str) -> bool:
    return hasattr(ctypes.CDLL(None), _sanitizer(name).init_symbol)


def require_runtime(name: str) -> None:
    if not runtime_loaded(name):
        raise HostEmulationError(
            f"a -fsanitize={name} host build only runs in a process that preloads {_sanitizer(name).runtime}; "
            f"run it through `python -m harness.cudac.sanitizers {name} ...`"
        )


def active_sanitizer() -> str | None:
    """The sanitizer this process runs under (``$SW_HOST_SANITIZER``), checked to be loaded."""
    name = os.environ.get(ENVIRONMENT) or None
    if name is not None:
        _sanitizer(name)
        require_runtime(name)
    return name


# ---- reports ---------------------------------------------------------------------------------

_HEADER = re.compile(r"^(?:==\d+==)?(?:WARNING|ERROR): (ThreadSanitizer|AddressSanitizer): (data race|[\w-]+)", re.M)
_CU_FRAME = re.compile(r"#\d+\s+(?:0x[0-9a-f]+ in )?(.*?) (\S+\.cu):(\d+)")


@dataclass(frozen=True)
class SanitizerReport:
    sanitizer: str  # "ThreadSanitizer", "AddressSanitizer"
    bug: str  # as the report names it: "data race", "heap-buffer-overflow", ...
    memory: str  # "shared memory", "global memory" or "" when the report does not say
    location: str  # "file.cu:LINE" of the first .cu frame, "" if none
    other_location: str  # TSan: the other access's .cu line
    text: str

    @property
    def kind(self) -> str:
        """The kind of bug, in words: "data race on shared memory", "out-of-bounds shared
        memory access (heap-buffer-overflow)"."""
        if self.bug == "data race":
            return f"data race on {self.memory}" if self.memory else "data race"
        if self.bug in ("heap-buffer-overflow", "stack-buffer-overflow", "global-buffer-overflow"):
            where = self.memory or "memory"
            return f"out-of-bounds {where} access ({self.bug})"
        return self.bug


def parse_reports(text: str) -> list[SanitizerReport]:
    """The reports in a sanitizer log, in order."""
    starts = [m.start() for m in _HEADER.finditer(text)]
    reports = []
    for begin, end in zip(starts, starts[1:] + [len(text)]):
        chunk = text[begin:end]
        header = _HEADER.match(chunk)
        frames = [f"{Path(m.group(2)).name}:{m.group(3)}" for m in _CU_FRAME.finditer(chunk)]
        # Where the memory came from: the report's allocation stack (up to a blank line).
        allocation = re.search(r"(?:Location is heap block|allocated by thread)[^\n]*\n(?:[^\n]+\n)*", chunk)
        if allocation is None:
            memory = ""
        elif "BlockMemory" in allocation.group(0):
            memory = "shared memory"
        else:
            memory = "global memory"
        other = ""
        if header.group(1) == "ThreadSanitizer" and "Previous" in chunk:
            previous = [f"{Path(m.group(2)).name}:{m.group(3)}" for m in _CU_FRAME.finditer(chunk[chunk.index("Previous"):])]
            other = previous[0] if previous else ""
        reports.append(SanitizerReport(header.group(1), header.group(2), memory, frames[0] if frames else "", other, chunk))
    return reports


class SanitizerError(HostEmulationError):
    """A sanitizer reported a bug during a kernel's launch; ``report`` holds it."""

    def __init__(self, file: str, kernel: str, report: SanitizerReport):
        where = f" at {report.location}" if report.location else ""
        if report.other_location and report.other_location != report.location:
            where += f" (the other access at {report.other_location})"
        super().__init__(f"{file}: kernel {kernel}: {report.sanitizer}: {report.kind}{where}")
        self.file, self.kernel, self.report = file, kernel, report


class _Log:
    """This process's sanitizer log file, read on from where the last launch left it."""

    def __init__(self, base: str):
        self.path = Path(f"{base}.{os.getpid()}")
        self.offset = 0
        self.launches = 0

    def read_new(self) -> str:
        if not self.path.exists():
            return ""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        return data.decode(errors="replace")


@functools.lru_cache(maxsize=None)
def _log(base: str) -> _Log:
    return _Log(base)


def launches() -> int:
    """Sanitized launches run so far in this process."""
    base = os.environ.get(LOG_ENVIRONMENT)
    return _log(base).launches if base else 0


def checked_launch(file: str, kernel: str, run) -> None:
    """``run()`` one launch of a sanitized build; raise ``SanitizerError`` for the first report
    the sanitizer logged during it."""
    base = os.environ.get(LOG_ENVIRONMENT)
    if not base:
        raise HostEmulationError(
            f"{file}: kernel {kernel}: a sanitized launch needs ${LOG_ENVIRONMENT} (the sanitizer's log_path); "
            "run through `python -m harness.cudac.sanitizers`"
        )
    log = _log(base)
    log.read_new()  # anything before this launch is not its report
    log.launches += 1
    try:
        run()
    except HostEmulationError as error:  # e.g. a divergent barrier: a report explains more
        reports = parse_reports(log.read_new())
        if reports:
            raise SanitizerError(file, kernel, reports[0]) from error
        raise
    reports = parse_reports(log.read_new())
    if reports:
        raise SanitizerError(file, kernel, reports[0])


def environment(name: str, log_base: str | os.PathLike) -> dict[str, str]:
    """The environment of a Python process that runs sanitized host builds."""
    sanitizer = _sanitizer(name)
    runtime = runtime_library(name)
    if runtime is None:
        raise HostEmulationError(f"no {sanitizer.runtime} for the host compiler: {unavailable_reason(name)}")
    env = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", ENVIRONMENT)}
    env.update({
        # The C++ runtime too: the sanitizers intercept __cxa_throw, and find the real one only
        # if libstdc++ is loaded when they start (python itself does not link it).
        "LD_PRELOAD": " ".join(str(p) for p in (runtime, _compiler_library("libstdc++.so.6")) if p),
        sanitizer.options_variable: f"{sanitizer.options} log_path={log_base}",
        ENVIRONMENT: name,
        LOG_ENVIRONMENT: str(log_base),
        # torch's own thread pools are not instrumented: their synchronisation is invisible to
        # ThreadSanitizer, so one thread keeps it from reporting torch's writes as races.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })  # fmt: skip
    return env
