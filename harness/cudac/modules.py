"""Built kernel modules: a ``.cu`` file's kernels for a device, built once per file version."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from harness.cudac.host import HostModule
from harness.cudac.source import CudaSource


@functools.lru_cache(maxsize=None)
def _load(path: Path, device: torch.device, version: int):
    """Built once per (file, device, version: its modification time), so an edited ``.cu`` is rebuilt."""
    source = CudaSource.read(path)
    if device.type == "cpu":
        return HostModule.build(source)
    from harness.cudac.device import DeviceModule

    return DeviceModule.build(source, device)


def load_module(path: str | Path, device: str | torch.device):
    """The kernels of ``path`` for ``device``: a host build on ``cpu``, NVRTC + cuda.core on
    ``cuda``. Built once per (file, device) in a process, again when the file changes."""
    path = Path(path).resolve()
    return _load(path, torch.device(device), path.stat().st_mtime_ns)
