"""Shared tooling for the project's CUDA C kernels: NVRTC builds with ptxas figures (no GPU
needed), host execution of the same source on the CPU, and GPU launches via cuda-python."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.cudac import banks
from harness.cudac.errors import HostEmulationError
from harness.cudac.host import HostModule, host_compiler, unsupported_features
from harness.cudac.sanitizer_runtime import SanitizerError
from harness.cudac.nvrtc import ARCHITECTURES, PtxasFigures, compile_cuda, nvrtc_unavailable_reason, parse_ptxas_log
from harness.cudac.source import CudaSource
from harness.cudac.figures import KernelFigures, Launch, figures_of, with_sass
from harness.cudac.figures import stages as report_stages
from harness.cudac.modules import load_module, source_version
from harness.cudac.launch import (
    SHARED_LIMIT,
    branch_moves,
    cupy_launcher,
    device_move_tables,
    argument_packer,
    kernel_arguments,
    dtype_suffix,
    max_shared_optin,
    specialise,
    widest_tile,
)
from harness.cudac.occupancy import ARCH as ARCH_LIMITS
from harness.cudac.ptx import assemble_ptx
from harness.cudac.sass import kernel_sass

__all__ = [
    "ARCHITECTURES",
    "ARCH_LIMITS",
    "assemble_ptx",
    "banks",
    "KernelFigures",
    "Launch",
    "SHARED_LIMIT",
    "branch_moves",
    "cupy_launcher",
    "device_move_tables",
    "argument_packer",
    "kernel_arguments",
    "dtype_suffix",
    "figures_of",
    "kernel_sass",
    "max_shared_optin",
    "report_stages",
    "specialise",
    "widest_tile",
    "with_sass",
    "CudaSource",
    "HostEmulationError",
    "HostModule",
    "SanitizerError",
    "PtxasFigures",
    "compile_cuda",
    "cupy_execution",
    "execution",
    "execution_mode",
    "is_host_build",
    "load_module",
    "source_version",
    "parse_ptxas_log",
    "source_figures",
    "unavailable_reason",
    "unsupported_features",
]


def unavailable_reason(path: str | Path, device: torch.device) -> str | None:
    """Why the kernels of ``path`` cannot run on ``device`` here, or None."""
    if device.type == "cpu":
        if host_compiler() is None:
            return "no C++ compiler for the host build (set CXX or install g++)"
        refused = unsupported_features(CudaSource.read(path))
        return f"host emulation cannot run it: {', '.join(refused)}" if refused else None
    from harness.cudac.core import cuda_core_unavailable_reason

    return cuda_core_unavailable_reason() or nvrtc_unavailable_reason()


def source_figures(path: str | Path, arch: str) -> list[PtxasFigures]:
    """ptxas figures of every kernel in ``path`` for ``arch`` (an NVRTC build, no GPU)."""
    return list(compile_cuda(CudaSource.read(path), arch).figures.values())


HOST_MODE = "host emulation:"


def execution_mode(path: str | Path, device: torch.device) -> str:
    name = Path(path).name
    if device.type == "cpu":
        return f"{HOST_MODE} {name} built by the C++ compiler, run on the CPU (no GPU)"
    return f"GPU: {name} built by NVRTC, launched with cuda.core on torch's current stream"


def is_host_build(impl) -> bool:
    """Whether ``impl`` runs on the CPU as a host build of a ``.cu`` (its CPU execution comes
    from ``execution`` here), so the host emulation's checking modes apply to it."""
    if "cpu" not in impl.devices:
        return False
    return impl.runs_on("cpu").host_build


def cupy_execution(path: str | Path, device: torch.device):
    """``execution`` of a kernel file that CuPy launches on a GPU (the host build on the CPU)."""
    from harness.registry import Execution

    if device.type == "cpu":
        return execution(path, device)
    mode = "GPU: cupy.RawModule (NVRTC) on torch's current stream, DLPack views"
    try:
        import cupy  # noqa: F401
    except ImportError as error:
        return Execution(mode, f"CuPy is not installed ({error}); install cupy-cuda13x (or cupy-cuda12x for a CUDA 12 driver)")
    return Execution(mode, unavailable_reason(path, device))


def execution(path: str | Path, device: torch.device):
    """The ``Implementation.execution`` of a kernel file run by this tooling: a host emulation
    on the CPU (checked, never timed), NVRTC + cuda.core on a GPU."""
    from harness.registry import Execution

    host = device.type == "cpu"
    return Execution(execution_mode(path, device), unavailable_reason(path, device), emulated=host, host_build=host)
