"""GPU execution of a project ``.cu``: NVRTC for the device's architecture, launched through
cuda-python's ``cuda.core`` on torch's current stream (no synchronisation, no copies)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.cudac.core import cuda_core
from harness.cudac.nvrtc import compile_cuda
from harness.cudac.source import CudaSource

def current_stream_handle(index: int) -> int:
    """torch's current stream on device ``index`` as its raw handle: torch's own accessor where it
    has one (no ``torch.cuda.Stream`` object made per call), else ``current_stream().cuda_stream``."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return raw(index) if raw is not None else torch.cuda.current_stream(index).cuda_stream


@dataclass(frozen=True)
class DeviceModule:
    source: CudaSource
    device_index: int
    kernels: dict
    #: per-module caches of what a launch repeats (see ``launch``)
    _types: dict = field(default_factory=dict, repr=False, compare=False)
    _streams: dict = field(default_factory=dict, repr=False, compare=False)
    _configs: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, source: CudaSource, device: torch.device) -> DeviceModule:
        core = cuda_core()
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        core.Device(index).set_current()
        cubin = compile_cuda(source, f"sm_{major}{minor}").cubin
        code = core.ObjectCode.from_cubin(cubin)
        return cls(source, index, {name: code.get_kernel(name) for name in source.kernels})

    def launch(
        self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], *args, shared_bytes: int = 0
    ) -> None:
        """Launch on torch's stream current now (any stream, not only the default one);
        pointer arguments are addresses (``data_ptr()``: tensors that require grad pass too).
        What a launch repeats is cached on the module: each kernel's argument types, a
        ``cuda.core`` view of each stream launched on, each launch configuration."""
        types = self._types.get(kernel)
        if types is None:
            types = self._types[kernel] = tuple(None if p.is_pointer else p.ctypes_type for p in self.source.kernels[kernel].params)
        if len(args) != len(types):
            raise TypeError(f"kernel {kernel} takes {len(types)} arguments, got {len(args)}")
        packed = [arg if kind is None else kind(arg) for kind, arg in zip(types, args)]
        core = cuda_core()
        handle = current_stream_handle(self.device_index)
        stream = self._streams.get(handle)
        if stream is None:
            if len(self._streams) >= 64:
                self._streams.clear()
            stream = self._streams[handle] = core.Stream.from_handle(handle)
        key = (grid, block, shared_bytes)
        config = self._configs.get(key)
        if config is None:
            config = self._configs[key] = core.LaunchConfig(grid=grid, block=block, shmem_size=shared_bytes)
        core.launch(stream, config, self.kernels[kernel], *packed)
