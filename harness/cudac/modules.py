"""Built kernel modules: a ``.cu`` file's kernels for a device, built once per file version."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from harness.cudac.host import HostModule
from harness.cudac.source import CudaSource


def source_version(path: str | Path) -> tuple[int, int]:
    """What a build of ``path`` depends on besides its name: the file (its inode: a symlink's
    target) and its modification time, in one ``stat`` (no path resolution per call)."""
    found = os.stat(path)
    return found.st_ino, found.st_mtime_ns


@functools.lru_cache(maxsize=None)
def _load(path: Path, device: torch.device, version: tuple[int, int]):
    """Built once per (file, device, version: ``source_version``), so an edited ``.cu`` is rebuilt."""
    source = CudaSource.read(path.resolve())
    if device.type == "cpu":
        return HostModule.build(source)
    from harness.cudac.device import DeviceModule

    return DeviceModule.build(source, device)


def load_module(path: str | Path, device: str | torch.device):
    """The kernels of ``path`` for ``device``: a host build on ``cpu``, NVRTC + cuda.core on
    ``cuda``. Built once per (file, device) in a process, again when the file changes."""
    return _load(Path(path), torch.device(device), source_version(path))
