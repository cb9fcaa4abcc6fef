"""What the benchmarks ran on: CPU and GPU identity, software versions, and the two peaks of
the roofline (FP32 FLOP/s and memory bandwidth), measured by small probes or given by the user.

The probes are deliberately plain torch: a large fp32 matrix multiply (the best FLOP rate a
tuned library reaches here) and a large tensor copy (read + write). They run once per
benchmark session, take the best of a few repetitions, and say how they were obtained.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from dataclasses import asdict, dataclass

import torch

#: Packages whose versions go into every result file.
SOFTWARE = (
    "torch", "numpy", "numba", "numba-cuda", "llvmlite", "cupy-cuda13x", "cuda-python",
    "nvidia-cuda-nvrtc", "pytest-benchmark", "pandas", "matplotlib",
)  # fmt: skip


@dataclass(frozen=True)
class Peaks:
    gflops: float | None
    gflops_source: str
    gbps: float | None
    gbps_source: str

    def as_dict(self) -> dict:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocation, library initialisation
    _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def _threads_note(device: torch.device) -> str:
    return f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""


def probe_gflops(device: torch.device, size: int = 2048, repeats: int = 15) -> tuple[float, str]:
    """FP32 GFLOP/s of a size x size matrix multiply (TF32 off), best of ``repeats``."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        seconds = _best_seconds(lambda: torch.mm(a, b, out=out), device, repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * size**3 / seconds / 1e9, f"probe: torch.mm fp32 {size}x{size}, best of {repeats}{_threads_note(device)}"


def probe_gbps(device: torch.device, megabytes: int = 256, repeats: int = 10) -> tuple[float, str]:
    """Bandwidth of copying a ``megabytes`` fp32 tensor (bytes read + bytes written), best of ``repeats``."""
    count = megabytes * 2**20 // 4
    source = torch.ones(count, device=device)
    target = torch.empty(count, device=device)
    seconds = _best_seconds(lambda: target.copy_(source), device, repeats)
    return 2 * count * 4 / seconds / 1e9, f"probe: copy of {megabytes} MiB fp32, best of {repeats}{_threads_note(device)}"


def peaks(device: torch.device, gflops: float | None = None, gbps: float | None = None) -> Peaks:
    """The roofline's peaks on ``device``: a value given by the user wins over the probe."""
    if gflops is not None and not gflops > 0:
        raise ValueError(f"peak GFLOP/s must be positive, got {gflops}")
    if gbps is not None and not gbps > 0:
        raise ValueError(f"peak GB/s must be positive, got {gbps}")
    flops, flops_source = (gflops, "given on the command line") if gflops else probe_gflops(device)
    bandwidth, bandwidth_source = (gbps, "given on the command line") if gbps else probe_gbps(device)
    return Peaks(flops, flops_source, bandwidth, bandwidth_source)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_info() -> dict:
    """CPU model, logical CPUs usable here, and the thread pools the computations use."""
    try:
        import numba

        numba_threads = numba.get_num_threads()
    except ImportError:
        numba_threads = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": cpu_model(),
        "threads": usable,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba_threads,
    }


def gpu_info() -> dict | None:
    """Name and SM count of the current CUDA device, or None without one."""
    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"name": properties.name, "sm_count": properties.multi_processor_count,
            "memory_gib": round(properties.total_memory / 2**30, 1)}  # fmt: skip


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in SOFTWARE:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def fingerprint(cpu: dict, gpu: dict | None) -> str:
    """A short name for the machine: host, CPU model, GPU (results merge by it)."""
    return f"{platform.node()} / {cpu['model']} / {gpu['name'] if gpu else 'no GPU'}"
