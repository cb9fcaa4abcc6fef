"""The GPU launch paths without a GPU: what reaches the driver for weights that require grad,
non-contiguous and misplaced tensors, a non-default stream, and the host work per call.

CuPy's GPU path is exercised against a stand-in ``cupy`` module that behaves as the real one
where it matters here: its ``from_dlpack`` refuses a tensor that requires grad, as torch's
DLPack export does (the failure every network run with CuPy kernels hit)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import ShiftwiseSpec, cudac, implementations
from harness.cudac import launch as launch_module

CUDA0 = torch.device("cuda", 0)
STREAM = 0xBEEF  # a non-default stream's handle


class OnCuda(torch.Tensor):
    """A CPU tensor that reports device cuda:0: enough for the launcher's host-side path."""

    @property
    def device(self):  # type: ignore[override]
        return CUDA0

    def get_device(self):  # type: ignore[override]
        return CUDA0.index


def on_cuda(t: torch.Tensor, requires_grad: bool = False) -> torch.Tensor:
    t = t.as_subclass(OnCuda)
    return t.requires_grad_() if requires_grad else t


class FakeCupy(types.ModuleType):
    """What cupy_launcher touches: RawModule, Device(index).attributes, ExternalStream, from_dlpack."""

    def __init__(self):
        super().__init__("cupy")
        self.launches, self.attribute_reads, self.streams, self.stream_views, self.device_switches = [], 0, [], 0, 0
        self.current_device = 0
        fake = self

        class Context:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class Device(Context):
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                fake.device_switches += 1
                return self

            @property
            def attributes(self):
                fake.attribute_reads += 1
                return {"MaxSharedMemoryPerBlockOptin": 227 * 1024}

        class ExternalStream(Context):
            def __init__(self, handle, device_id=-1):
                self.ptr, self.device_id = handle, device_id
                fake.stream_views += 1

        class Function:
            def __init__(self, name):
                self.name, self.max_dynamic_shared_size_bytes = name, 0

            def __call__(self, grid, block, args, shared_mem=0, stream=None):
                fake.launches.append((self.name, grid, block, args, shared_mem))
                fake.streams.append(None if stream is None else stream.ptr)  # None: CuPy's current stream

        class RawModule:
            def __init__(self, code, options=()):
                self.code = code

            def get_function(self, name):
                return Function(name)

        def from_dlpack(tensor):
            if tensor.requires_grad:
                raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
            return tensor

        runtime = types.SimpleNamespace(getDevice=lambda: fake.current_device)
        self.cuda = types.SimpleNamespace(Device=Device, ExternalStream=ExternalStream, runtime=runtime)
        self.RawModule, self.from_dlpack = RawModule, from_dlpack


@pytest.fixture
def fake_cupy(monkeypatch):
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda index=None: types.SimpleNamespace(cuda_stream=STREAM))
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: fake.torch_stream, raising=False)
    fake.torch_stream = STREAM
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    caches = (launch_module._launcher, launch_module._cupy_module, launch_module._shared_optin)
    for cache in caches:
        cache.cache_clear()
    yield fake
    for cache in caches:  # never leave the stand-in's modules and limits behind
        cache.cache_clear()


def _module(name):
    return sys.modules[implementations()[name].fn.__module__]


def test_torch_refuses_dlpack_for_a_weight_that_requires_grad():
    """The failure mode: a network's small-conv weight is an nn.Parameter, also under no_grad."""
    weight = torch.nn.Parameter(torch.ones(4, 1, 3, 3))
    with torch.no_grad(), pytest.raises((BufferError, RuntimeError), match="require"):
        weight.__dlpack__()


def test_kernel_arguments_pass_a_parameter_by_address():
    params = cudac.CudaSource.read(_module("cupy_fused").KERNEL_SOURCE).kernels["sw_fused_columns_f32"].params
    weight = torch.nn.Parameter(torch.ones(4, 1, 3, 3))
    args = [torch.ones(1, 4, 5, 5), weight, torch.empty(1, 4, 5, 5), torch.zeros(4, 2, dtype=torch.int32),
            torch.zeros(4, 2, 2, dtype=torch.int32), 2, 2, 4, 5, 5, 3, 3, 4]  # fmt: skip
    packed = cudac.kernel_arguments("sw_fused_columns_f32", params, args, torch.device("cpu"))
    assert packed[1] == np.uint64(weight.data_ptr()) and packed[1].dtype == np.uint64
    assert packed[5].dtype == np.int32 and int(packed[5]) == 2


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.transpose(2, 3), "x must be contiguous"),
        (lambda t: t.double(), r"x \(float\*\) expects torch.float32, got torch.float64"),
        (lambda t: t.as_subclass(OnCuda), "x must be on cpu, got a tensor on cuda:0"),
    ],
)
def test_kernel_arguments_refuse_what_the_kernel_would_misread(change, message):
    params = cudac.CudaSource.read(_module("cupy_onepass").KERNEL_SOURCE).kernels["sw_onepass_f32"].params
    x = change(torch.ones(1, 4, 6, 5))
    with pytest.raises((ValueError, TypeError), match=message):
        cudac.kernel_arguments("sw_onepass_f32", params[:1], [x], torch.device("cpu"))


def test_cupy_gpu_path_launches_a_parameter_on_the_current_stream(fake_cupy):
    source = _module("cupy_fused").KERNEL_SOURCE
    launch = cudac.cupy_launcher(source, CUDA0)
    x, out_v = on_cuda(torch.ones(1, 4, 5, 5)), on_cuda(torch.empty(1, 4, 5, 5))
    weight = on_cuda(torch.ones(4, 1, 3, 3), requires_grad=True)  # a network's nn.Parameter
    columns, moves = on_cuda(torch.zeros(4, 2, dtype=torch.int32)), on_cuda(torch.zeros(4, 2, 2, dtype=torch.int32))
    with torch.no_grad():
        for _ in range(2):
            launch("sw_fused_columns_f32", (4,), (128,), x, weight, out_v, columns, moves, 2, 2, 4, 5, 5, 3, 3, 4,
                   shared_bytes=1024)  # fmt: skip
    (name, grid, block, args, shared), _ = fake_cupy.launches
    assert (name, grid, block, shared) == ("sw_fused_columns_f32", (4,), (128,), 1024)
    assert [int(a) for a in args[:3]] == [x.data_ptr(), weight.data_ptr(), out_v.data_ptr()]
    assert fake_cupy.streams == [STREAM, STREAM]  # torch's current stream at each launch
    assert cudac.cupy_launcher(source, CUDA0) is launch  # one launcher per (file, device)
    # A stream made current between launches is the next launch's; one CuPy view per stream, no
    # device switch while the launch's device is current, one when another is.
    fake_cupy.torch_stream = 0xCAFE
    with torch.no_grad():
        launch("sw_fused_columns_f32", (4,), (128,), x, weight, out_v, columns, moves, 2, 2, 4, 5, 5, 3, 3, 4, shared_bytes=1024)
        switches = fake_cupy.device_switches
        fake_cupy.current_device = 1
        launch("sw_fused_columns_f32", (4,), (128,), x, weight, out_v, columns, moves, 2, 2, 4, 5, 5, 3, 3, 4, shared_bytes=1024)
    assert fake_cupy.streams[2:] == [0xCAFE, 0xCAFE] and fake_cupy.stream_views == 2
    assert fake_cupy.device_switches == switches + 1


def test_cupy_gpu_path_reads_device_attributes_once(fake_cupy):
    for _ in range(3):
        assert cudac.max_shared_optin(CUDA0) == 227 * 1024
    assert fake_cupy.attribute_reads == 1


def test_onepass_second_call_reads_and_hashes_nothing(monkeypatch):
    """The host work a call repeats: after the first call of a configuration, no source is
    read, nothing hashed, no launcher or plan made (the GPU path runs the same code)."""
    module = _module("cupy_onepass")
    spec = ShiftwiseSpec.official(big_kernel=7, small_kernel=3, channels=4, groups=2)
    x = torch.randn(1, 4, 6, 6)
    weight = torch.nn.Parameter(torch.randn(spec.weight_shape))
    with torch.no_grad():
        first = module.forward(x, weight, spec)
    counts = {"read_text": 0, "sha256": 0, "plan": 0, "resolve": 0, "packer": 0}
    real_read, real_hash, real_plan = Path.read_text, launch_module.hashlib.sha256, module.launch_plan
    real_resolve, real_packer = Path.resolve, launch_module.argument_packer

    def counting(name, real):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(Path, "read_text", counting("read_text", real_read))
    monkeypatch.setattr(launch_module.hashlib, "sha256", counting("sha256", real_hash))
    monkeypatch.setattr(module, "launch_plan", counting("plan", real_plan))
    monkeypatch.setattr(Path, "resolve", counting("resolve", real_resolve))
    monkeypatch.setattr(launch_module, "argument_packer", counting("packer", real_packer))
    with torch.no_grad():
        second = module.forward(x, weight, spec)
    # no path resolved, no argument plan made: one stat of the .cu (its version) and the packing
    assert counts == {"read_text": 0, "sha256": 0, "plan": 0, "resolve": 0, "packer": 0}
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_cuda_core_probe_takes_the_experimental_namespace_of_an_older_release(monkeypatch):
    from harness.cudac import core

    names = {name: object() for name in core.CUDA_CORE_NAMES}
    old = types.ModuleType("cuda.core")
    old.__version__ = "0.2.0"
    old.experimental = types.ModuleType("cuda.core.experimental")
    vars(old.experimental).update(names)
    monkeypatch.setitem(sys.modules, "cuda.core", old)
    monkeypatch.setitem(sys.modules, "cuda.core.experimental", old.experimental)
    core.cuda_core.cache_clear()
    try:
        assert core.cuda_core() is old.experimental
        del old.experimental.launch
        core.cuda_core.cache_clear()
        assert core.cuda_core_unavailable_reason() == "cuda.core 0.2.0 lacks " + ", ".join(core.CUDA_CORE_NAMES) + \
            " (in cuda.core and cuda.core.experimental)"  # fmt: skip
    finally:
        core.cuda_core.cache_clear()


def test_numba_shared_without_nvvm_is_unavailable_with_the_reason(monkeypatch):
    module = _module("numba_shared")
    nvvm = types.ModuleType("numba.cuda.cudadrv.nvvm")
    nvvm.is_available = lambda: False

    def no_nvvm():
        raise OSError("libnvvm.so: cannot open shared object file")

    nvvm.NVVM = no_nvvm
    package = types.ModuleType("numba.cuda.cudadrv")
    package.nvvm = nvvm
    monkeypatch.setitem(sys.modules, "numba.cuda.cudadrv", package)
    monkeypatch.setitem(sys.modules, "numba.cuda.cudadrv.nvvm", nvvm)
    module._nvvm_probe.cache_clear()
    try:
        assert module._nvvm_missing() == (
            "NVVM is not usable by numba-cuda (OSError: libnvvm.so: cannot open shared object file); "
            "install nvidia-nvvm or a CUDA toolkit"
        )
    finally:
        module._nvvm_probe.cache_clear()
