"""Compile a project ``.cu`` with NVRTC (through cuda-python's ``cuda.core``) and read the
ptxas figures of every kernel from the compile log. Needs no GPU and no driver: NVRTC comes
from the ``nvidia-cuda-nvrtc`` wheel."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from harness.cudac.source import CudaSource

#: The architectures every project kernel is built for.
ARCHITECTURES = ("sm_80", "sm_90")


@dataclass(frozen=True)
class PtxasFigures:
    """Resource use of one kernel for one architecture, as ptxas reports it."""

    kernel: str
    arch: str
    registers: int
    shared_bytes: int
    #: kernel-parameter constant bank; ptxas reports it for sm_80 but not for sm_90 (None)
    constant_bytes: int | None
    stack_bytes: int
    spill_stores: int
    spill_loads: int
    barriers: int


@dataclass(frozen=True)
class Compiled:
    source: CudaSource
    arch: str
    cubin: bytes
    figures: dict[str, PtxasFigures]
    log: str


def nvrtc_unavailable_reason() -> str | None:
    """Why NVRTC cannot be used here, or None."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        from harness.cudac.core import cuda_core

        cuda_core()

        load_nvidia_dynamic_lib("nvrtc")
    except Exception as error:  # import errors and a missing libnvrtc both land here
        return f"NVRTC not usable ({type(error).__name__}: {error}); install cuda-python and nvidia-cuda-nvrtc"
    return None


def compile_cuda(source: CudaSource, arch: str) -> Compiled:
    """Build ``source`` to a cubin for ``arch`` (e.g. ``sm_80``) with ``ptxas -v``. Compile-time
    configurations are separate sources (``harness.cudac.launch.specialise`` writes the defines
    into the text), so the host build and NVRTC always compile the same text."""
    from harness.cudac.core import cuda_core

    core = cuda_core()
    options = core.ProgramOptions(name=source.path.name, arch=arch, std="c++17", ptxas_options=["-v"])
    log = io.StringIO()
    try:
        code = core.Program(source.text, "c++", options).compile("cubin", logs=log)
    except Exception as error:
        raise RuntimeError(f"NVRTC could not compile {source.path.name} for {arch}:\n{error}\n{log.getvalue()}") from None
    text = log.getvalue().replace("\x00", "")
    figures = parse_ptxas_log(text, arch)
    missing = sorted(set(source.kernels) - set(figures))
    if missing:
        raise RuntimeError(f"{source.path.name} for {arch}: no ptxas figures for kernels {missing} in the log:\n{text}")
    return Compiled(source, arch, bytes(code.code), {name: figures[name] for name in source.kernels}, text)


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FIGURES = {
    "stack_bytes": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "registers": re.compile(r"Used (\d+) registers"),
    "barriers": re.compile(r"used (\d+) barriers"),
    "shared_bytes": re.compile(r"(\d+) bytes smem"),
    "constant_bytes": re.compile(r"(\d+) bytes cmem\[0\]"),
}


def parse_ptxas_log(log: str, arch: str) -> dict[str, PtxasFigures]:
    """Per-kernel figures from ``ptxas -v`` output (absent figures, e.g. no smem, are 0)."""
    result = {}
    blocks = _ENTRY.split(log)
    # split() gives [before, name1, arch1, text1, name2, arch2, text2, ...]
    for name, entry_arch, text in zip(blocks[1::3], blocks[2::3], blocks[3::3]):
        if entry_arch != arch:
            continue
        # Absent figures are 0 (ptxas omits "smem" when there is none), but for cmem, which
        # newer targets do not report at all.
        values = {key: int(m.group(1)) if (m := pattern.search(text)) else 0 for key, pattern in _FIGURES.items()}
        if not _FIGURES["constant_bytes"].search(text):
            values["constant_bytes"] = None
        if not _FIGURES["registers"].search(text):
            raise ValueError(f"ptxas log for {name} ({arch}) has no register count:\n{text}")
        result[name] = PtxasFigures(kernel=name, arch=arch, **values)
    return result
