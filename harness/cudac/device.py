"""GPU execution of a project ``.cu``: NVRTC for the device's architecture, launched through
cuda-python's ``cuda.core`` on torch's current stream (no synchronisation, no copies)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.cudac.core import cuda_core
from harness.cudac.nvrtc import compile_cuda
from harness.cudac.source import CudaSource

@dataclass(frozen=True)
class DeviceModule:
    source: CudaSource
    device_index: int
    kernels: dict

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
        pointer arguments are addresses (``data_ptr()``: tensors that require grad pass too)."""
        core = cuda_core()
        signature = self.source.kernels[kernel]
        if len(args) != len(signature.params):
            raise TypeError(f"kernel {kernel} takes {len(signature.params)} arguments, got {len(args)}")
        packed = [arg if p.is_pointer else p.ctypes_type(arg) for p, arg in zip(signature.params, args)]
        stream = core.Stream.from_handle(torch.cuda.current_stream(self.device_index).cuda_stream)
        config = core.LaunchConfig(grid=grid, block=block, shmem_size=shared_bytes)
        core.launch(stream, config, self.kernels[kernel], *packed)
