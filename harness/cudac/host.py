"""Host execution: build a project ``.cu`` for the CPU and launch its kernels over a whole grid.

The same source that NVRTC compiles for sm_80/sm_90 is compiled here by the system C++
compiler with ``host_runtime.h`` included first (CUDA's built-in indices, ``__syncthreads`` as
a real barrier, ``atomicAdd`` as a real atomic), its ``__shared__`` declarations rewritten into
per-block allocations, plus one generated ``extern "C"`` launcher per kernel, and loaded with
ctypes. Sources that use what the emulation does not model are refused (see
``UNSUPPORTED``), never emulated wrongly.

Three builds of a source (see docs/cuda-kernels.md): the fast one (fibers; optionally each
launch run under several thread schedules and compared, ``harness.cudac.schedules``), and
``-fsanitize=thread`` / ``-fsanitize=address`` builds with a real OS thread per CUDA thread,
used in a process that preloads the sanitizer's runtime (``harness.cudac.sanitizer_runtime``; the child processes: ``harness.cudac.sanitizers``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.cudac import schedules as _schedules
from harness.cudac import sanitizer_runtime as _sanitizers
from harness.cudac.compiler import host_compiler
from harness.cudac.errors import HostEmulationError
from harness.cudac.source import CudaSource

RUNTIME_HEADER = Path(__file__).with_name("host_runtime.h")
CXX_FLAGS = ("-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-fno-fast-math", "-ffp-contract=off")
#: Execution modes of host_runtime.h's launch().
LOOP, FIBERS, THREADS = 0, 1, 2

#: Features the host emulation does not model: pattern -> what it is.
UNSUPPORTED = {
    r"__shfl\w*": "warp shuffles",
    r"__ballot\w*|__any_sync|__all_sync|__match\w*|__reduce_\w+_sync": "warp votes and reductions",
    r"__activemask|__syncwarp|\bwarpSize\b": "warp-level execution",
    r"__syncthreads_(?:count|and|or)": "barrier reductions",
    r"__threadfence\w*|__nanosleep": "memory fences",
    r"cooperative_groups|\bthis_grid\b|\bgrid\.sync\b": "cooperative groups",
    r"\basm\b|\b__asm__\b": "inline PTX",
    r"\btex\w*\d?D\b|\bsurf\w*\d?D\b": "texture and surface memory",
    r"\batomic(?!Add\b)[A-Z]\w*": "atomics other than atomicAdd",
}

#: ``extern __shared__ T name[];`` inside a kernel becomes a pointer to the block's buffer.
_DYNAMIC_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?((?:unsigned\s+)?\w+)\s+(\w+)\s*\[\s*\]\s*;"
)
#: ``[static] __shared__ [__align__(n)] T name[dims]...;`` inside a function becomes a reference
#: to the block's own allocation of exactly that type (``swemu::shared_static``).
_STATIC_SHARED = re.compile(
    r"(?:\bstatic\s+)?(?<!\w)__shared__\s+(?:__align__\(\s*(?P<align>\d+)\s*\)\s+)?"
    r"(?P<type>(?:(?:const|volatile|unsigned|signed|long|short)\s+)*[A-Za-z_][\w:]*(?:\s*<[^;{}()]*?>)?"
    r"(?:\s+(?:long|int|short|char|double|const|volatile)\b)*)"
    r"\s+(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\[\];]+\]\s*)*);"
)

#: CUDA's limits, enforced here so a launch that would fail on a GPU fails on the host too.
MAX_THREADS_PER_BLOCK = 1024
#: Dynamic shared memory a launch may ask for without opting in (cudaFuncSetAttribute).
MAX_DYNAMIC_SHARED = 48 * 1024
#: ... and after opting in, as a GPU launcher does: the smallest maximum of the targets (sm_80: 163 KiB).
MAX_DYNAMIC_SHARED_OPTIN = 163 * 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)


def unsupported_features(source: CudaSource) -> list[str]:
    """What ``source`` uses that the host emulation cannot run faithfully."""
    code = source.code
    found = [f"{what} ({match.group(0)})" for pattern, what in UNSUPPORTED.items() if (match := re.search(pattern, code))]
    for match in re.finditer(r"extern\s+__shared__[^;]*;", code):
        if not _DYNAMIC_SHARED.fullmatch(match.group(0)):
            found.append(f"a dynamic shared memory declaration it cannot read ({match.group(0)})")
        elif code[: match.start()].count("{") == code[: match.start()].count("}"):
            found.append(f"dynamic shared memory declared outside a kernel ({match.group(0)})")
    without_dynamic = _DYNAMIC_SHARED.sub(" ", code)
    readable = {m.start() for m in _STATIC_SHARED.finditer(without_dynamic)}
    for match in re.finditer(r"(?:\bstatic\s+)?(?<!\w)__shared__\b[^;]*;", without_dynamic):
        if match.start() not in readable:
            found.append(f"a __shared__ declaration it cannot read ({' '.join(match.group(0).split())})")
        elif without_dynamic[: match.start()].count("{") == without_dynamic[: match.start()].count("}"):
            found.append(f"__shared__ memory declared outside a function ({' '.join(match.group(0).split())})")
    return found


def _keep_lines(replacement: str, original: str) -> str:
    """``replacement`` followed by as many newlines as ``original`` had (line numbers of the
    source, which the debug info and the sanitizers' reports use, stay those of the .cu)."""
    return replacement + "\n" * original.count("\n")


def _static_shared(match: re.Match) -> str:
    align = match.group("align") or "0"
    declared = f"{' '.join(match.group('type').split())} {''.join(match.group('dims').split())}".strip()
    return _keep_lines(
        f"auto& {match.group('name')} = ::swemu::shared_static<{declared}, {align}>([] {{}});", match.group(0)
    )


def _host_source(text: str) -> str:
    """The kernel source as the host build compiles it: each in-kernel ``extern __shared__``
    array becomes a pointer to the block's dynamic shared memory, each ``__shared__``
    declaration a reference to the block's own allocation of it."""
    text = _DYNAMIC_SHARED.sub(
        lambda m: _keep_lines(f"{m.group(1)}* {m.group(2)} = reinterpret_cast<{m.group(1)}*>(::swemu::dynamic_shared);", m.group(0)),
        text,
    )
    return _STATIC_SHARED.sub(_static_shared, text)


def build_cache_dir() -> Path:
    """Where host builds (and the specialised sources they are built from) are cached:
    ``$SW_HOST_BUILD_DIR``, else a per-user folder in the temporary directory."""
    root = os.environ.get("SW_HOST_BUILD_DIR") or Path(tempfile.gettempdir()) / f"sw-harness-host-{os.getuid()}"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _launcher(signature) -> str:
    params = ", ".join(f"{p.ctype} {p.name}" for p in signature.params)
    args = ", ".join(p.name for p in signature.params)
    sep = ", " if params else ""
    return (
        f'extern "C" int swemu_launch_{signature.name}(const unsigned* grid, const unsigned* block, int mode, '
        f"int schedule, unsigned long long seed, int poison, size_t shared_bytes{sep}{params}, char* error, "
        f"size_t error_size) {{\n"
        f"    return ::swemu::launch(grid, block, mode, schedule, seed, poison, shared_bytes, "
        f"[&] {{ {signature.name}({args}); }}, error, error_size);\n}}\n"
    )


@dataclass(frozen=True)
class HostModule:
    """A host build of one ``.cu``; ``launch`` runs a kernel over a whole grid on the CPU."""

    source: CudaSource
    library: ctypes.CDLL
    #: True when the source uses __shared__ or __syncthreads: each CUDA thread of a block then
    #: runs as a fiber, switching at every __syncthreads (in the sanitizer builds, as a thread).
    fiber_mode: bool
    #: None for the fast build, else the sanitizer it was built with ("thread" or "address").
    sanitizer: str | None = None

    @classmethod
    def build(cls, source: CudaSource, sanitizer: str | None = "active") -> HostModule:
        """The host build of ``source``: by default the one for this process (sanitized when
        it runs under ``harness.cudac.sanitizers``, else the fast one); ``sanitizer`` "thread"
        or "address" asks for that sanitized build (which only loads in a process running
        that sanitizer's runtime), None for the fast one."""
        if sanitizer == "active":
            sanitizer = _sanitizers.active_sanitizer()
        refused = unsupported_features(source)
        if refused:
            raise HostEmulationError(
                f"{source.path.name} uses what the host emulation does not model: {', '.join(refused)}"
            )
        compiler = host_compiler()
        if compiler is None:
            raise HostEmulationError("no C++ compiler found for the host build (set CXX, or install g++)")
        flags = CXX_FLAGS if sanitizer is None else _sanitizers.build_flags(sanitizer)
        if sanitizer is not None:
            _sanitizers.require_runtime(sanitizer)
        unit = (
            f'#include "{RUNTIME_HEADER}"\n#line 1 "{source.path}"\n{_host_source(source.text)}\n'
            f'#line 1 "swemu-launchers-{source.path.stem}.cpp"\n'
            + "\n".join(_launcher(sig) for sig in source.kernels.values())
        )
        key = hashlib.sha256(
            "\0".join([unit, RUNTIME_HEADER.read_text(), compiler, *flags]).encode()
        ).hexdigest()[:20]
        variant = f"-{sanitizer}" if sanitizer else ""
        library = build_cache_dir() / f"{source.path.stem}{variant}-{key}.so"
        if not library.exists():
            with tempfile.TemporaryDirectory(dir=build_cache_dir()) as scratch:
                unit_path = Path(scratch) / f"{source.path.stem}.cpp"
                unit_path.write_text(unit)
                built = Path(scratch) / library.name
                done = subprocess.run(
                    [compiler, *flags, str(unit_path), "-o", str(built)], capture_output=True, text=True
                )
                if done.returncode != 0:
                    raise HostEmulationError(f"host build of {source.path.name} failed:\n{done.stderr}")
                os.replace(built, library)  # atomic: concurrent builders never see a partial file
        lib = ctypes.CDLL(str(library))
        for sig in source.kernels.values():
            fn = getattr(lib, f"swemu_launch_{sig.name}")
            fn.argtypes = [
                ctypes.POINTER(ctypes.c_uint),
                ctypes.POINTER(ctypes.c_uint),
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_ulonglong,
                ctypes.c_int,
                ctypes.c_size_t,
                *(p.ctypes_type for p in sig.params),
                ctypes.c_char_p,
                ctypes.c_size_t,
            ]
            fn.restype = ctypes.c_int
        fiber_mode = bool(re.search(r"__shared__|__syncthreads", source.code))
        return cls(source, lib, fiber_mode, sanitizer)

    def launch(
        self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], *args, shared_bytes: int = 0,
        opt_in: bool = False,
    ) -> None:
        """Run ``kernel`` over ``grid`` x ``block`` with ``shared_bytes`` of dynamic shared
        memory; pointer arguments are addresses (ints).

        A sanitized build raises ``SanitizerError`` for a report of its sanitizer during the
        launch; the fast build runs the launch once per active schedule
        (``harness.cudac.schedules``) and raises ``HostEmulationError`` if they differ."""
        signature = self.source.kernels.get(kernel)
        if signature is None:
            raise KeyError(f"{self.source.path.name} has no kernel {kernel!r}; it has {sorted(self.source.kernels)}")
        if len(args) != len(signature.params):
            raise TypeError(f"kernel {kernel} takes {len(signature.params)} arguments, got {len(args)}")
        grid3, block3 = _dims("grid", grid, MAX_GRID), _dims("block", block, MAX_BLOCK)
        if block3[0] * block3[1] * block3[2] > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"block {block} has more than {MAX_THREADS_PER_BLOCK} threads")
        limit = MAX_DYNAMIC_SHARED_OPTIN if opt_in else MAX_DYNAMIC_SHARED
        if not 0 <= shared_bytes <= limit:
            more = "" if opt_in else " (without opting in; opt_in=True allows the sm_80 maximum)"
            raise ValueError(f"dynamic shared memory must be in 0..{limit} bytes, got {shared_bytes}{more}")

        def run(schedule: _schedules.Schedule, poison: int) -> None:
            mode = THREADS if self.sanitizer else FIBERS if self.fiber_mode else LOOP
            error = ctypes.create_string_buffer(1024)
            status = getattr(self.library, f"swemu_launch_{kernel}")(
                (ctypes.c_uint * 3)(*grid3),
                (ctypes.c_uint * 3)(*block3),
                mode,
                schedule.code,
                schedule.seed,
                poison,
                shared_bytes,
                *args,
                error,
                len(error),
            )
            if status != 0:
                raise HostEmulationError(f"{self.source.path.name}: kernel {kernel}: {error.value.decode()}")

        if self.sanitizer:
            _sanitizers.checked_launch(self.source.path.name, kernel, lambda: run(_schedules.FORWARD, _schedules.POISON))
            return
        plan = _schedules.active_schedules()
        if len(plan) == 1:
            run(plan[0], _schedules.POISON)
            return
        _schedules.compare_schedules(self.source.path.name, signature, args, plan, run)


def _dims(label: str, value: tuple[int, ...] | int, limits: tuple[int, int, int]) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, int) else tuple(value)
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{label} must have 1 to 3 dimensions, got {value}")
    dims = dims + (1,) * (3 - len(dims))
    for axis, (size, limit) in enumerate(zip(dims, limits)):
        if not 1 <= size <= limit:
            raise ValueError(f"{label} dimension {'xyz'[axis]} must be in 1..{limit}, got {size}")
    return dims  # type: ignore[return-value]
