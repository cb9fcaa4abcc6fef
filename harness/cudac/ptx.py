"""ptxas figures of PTX built elsewhere (Numba's NVVM, Triton's LLVM): assemble it with
``ptxas -v`` and read the log, keeping the cubin so the SASS mix describes the same binary.

NVRTC builds report their figures in the compile log (``harness.cudac.nvrtc``); a kernel
compiled by another toolchain arrives as PTX, and its implementation would otherwise run and
parse ptxas itself."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.cudac.nvrtc import PtxasFigures, parse_ptxas_log

_TARGET = re.compile(r"^\s*\.target\s+(sm_\w+)", re.MULTILINE)


def default_ptxas() -> str:
    """ptxas from the nvidia-cuda-nvcc wheel."""
    from cuda.pathfinder import find_nvidia_binary_utility

    found = find_nvidia_binary_utility("ptxas")
    if found is None:
        raise RuntimeError("ptxas not found; install the nvidia-cuda-nvcc wheel")
    return found


def assemble_ptx(ptx: str, arch: str, *, ptxas: str | None = None, options: Sequence[str] = ()) -> tuple[dict[str, PtxasFigures], bytes]:
    """(figures by kernel, cubin) of ``ptx`` assembled by ``ptxas`` (default: the wheel's) with
    ``options``, for the PTX's own ``.target`` (``sm_90a`` where a toolchain targets the
    architecture-specific variant); figures are labelled ``arch`` ("sm_90")."""
    found = _TARGET.search(ptx)
    if found is None:
        raise ValueError("PTX without a .target line")
    target = found.group(1)
    if target.removesuffix("a") != arch:
        raise ValueError(f"PTX targets {target}, not {arch}")
    with tempfile.TemporaryDirectory() as scratch:
        source, cubin = Path(scratch) / "kernel.ptx", Path(scratch) / "kernel.cubin"
        source.write_text(ptx)
        done = subprocess.run([ptxas or default_ptxas(), *options, "-v", f"-arch={target}", str(source), "-o", str(cubin)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"ptxas failed for {target}:\n{done.stderr}")
        code = cubin.read_bytes()
    figures = parse_ptxas_log(done.stdout + done.stderr, target)
    return {name: dataclasses.replace(f, arch=arch) for name, f in figures.items()}, code
