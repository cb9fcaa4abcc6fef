"""Host work per call of cupy_onepass's launch path, measured on the CPU (no GPU here): the code
at git revision REV against the working tree's, interleaved round by round in one process.

(A) the CPU launch path: ``forward`` at SW-tiny stage 3, B=64, with the host build's kernel
launch stubbed (the lookups, the .cu's stat, the allocations, the argument packing).
(B) the GPU launch closure of ``cupy_launcher`` for cuda:0 with a stand-in CuPy whose kernel call
does nothing (real ``cupy.cuda.ExternalStream`` objects; torch's stream accessors stubbed, which
favours the old code: it made a ``torch.cuda.Stream`` per call): the argument packing, the
stream and the device. Not included: CuPy's own argument conversion and the driver's launch.
Run on a shared machine the absolute figures swing; compare the two columns of one run.

    .venv/bin/python reports/notes/gpu_launch_host_work.py REV
"""
import statistics, subprocess, sys, time, types
from pathlib import Path
import numpy as np
import torch
import harness.cudac as cudac
from harness import implementations
from harness.cases import load_cases
from harness.cudac import host as host_module

REV = sys.argv[1]
ROOT = Path(__file__).resolve().parents[2]

def old_module(name, path):
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{REV}:{path}"], capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(name)
    module.__file__ = str(ROOT / path)
    sys.modules[name] = module
    exec(compile(text, str(ROOT / path), "exec"), module.__dict__)
    return module

old_launch = old_module("old_launch", "harness/cudac/launch.py")
old_onepass = old_module("old_onepass", "impls/cupy_onepass.py")
old_onepass.KERNEL_SOURCE = ROOT / "impls/cupy_onepass.cu"
old_onepass.cudac = types.SimpleNamespace(**{k: getattr(cudac, k) for k in dir(cudac) if not k.startswith("__")})
for k in ("cupy_launcher", "specialise", "kernel_arguments", "max_shared_optin", "SHARED_LIMIT"):
    setattr(old_onepass.cudac, k, getattr(old_launch, k))
new_onepass = sys.modules[implementations()["cupy_onepass"].fn.__module__]

(case,) = [c for c in load_cases(suites=["sw_tiny"]) if c.name == "tiny-s3-b64"]
spec, shape = case.spec(), case.input_shape
x, weight = torch.randn(shape), torch.nn.Parameter(torch.randn(spec.weight_shape))

def rounds(fns, calls=200, repeats=15):
    spent = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved: each round runs every variant
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            spent[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(v) * 1e6 for name, v in spent.items()}

# (A) the CPU launch path: the whole forward, the host build's kernel not run (its launch stubbed)
real_launch = host_module.HostModule.launch
with torch.no_grad():
    old_onepass.forward(x, weight, spec); new_onepass.forward(x, weight, spec)  # builds, caches
    host_module.HostModule.launch = lambda self, *a, **k: None
    try:
        a = rounds({"before": lambda: old_onepass.forward(x, weight, spec), "after": lambda: new_onepass.forward(x, weight, spec)})
    finally:
        host_module.HostModule.launch = real_launch
print(f"(A) CPU launch path, cupy_onepass.forward at tiny-s3-b64 without its kernel: before {a['before']:.1f} us, after {a['after']:.1f} us per call")

# (B) the GPU launch closure (cupy_launcher's, for cuda:0) with a stand-in CuPy whose kernel call
# does nothing; arguments are CPU tensors that report cuda:0; real cupy.cuda.ExternalStream objects.
import cupy as real_cupy
CUDA0 = torch.device("cuda", 0)
class OnCuda(torch.Tensor):
    @property
    def device(self):
        return CUDA0
    def get_device(self):
        return 0
class Ctx:
    def __enter__(self): return self
    def __exit__(self, *e): return False
class Device(Ctx):
    def __init__(self, index): self.index = index
    @property
    def attributes(self): return {"MaxSharedMemoryPerBlockOptin": 227 * 1024}
class ExternalStream(Ctx):
    def __init__(self, handle, device_id=-1):
        self.inner = real_cupy.cuda.ExternalStream(handle, device_id)
        self.ptr = handle
class Function:
    max_dynamic_shared_size_bytes = 0
    def __call__(self, grid, block, args, shared_mem=0, stream=None): pass
class RawModule:
    def __init__(self, code, options=()): pass
    def get_function(self, name): return Function()
fake = types.ModuleType("cupy")
fake.RawModule = RawModule
fake.cuda = types.SimpleNamespace(Device=Device, ExternalStream=ExternalStream, runtime=types.SimpleNamespace(getDevice=lambda: 0))
sys.modules["cupy"] = fake
torch.cuda.current_stream = lambda index=None: types.SimpleNamespace(cuda_stream=0xBEEF)  # cheaper than torch's (a Stream object)
torch.cuda.current_device = lambda: 0
torch._C._cuda_getCurrentRawStream = lambda index: 0xBEEF
_, kernel, plan = old_onepass._prepared(spec, x.shape, x.dtype, torch.device("cpu"))
source = cudac.specialise(new_onepass.KERNEL_SOURCE, plan.defines)
launch_old, launch_new = old_launch.cupy_launcher(source, CUDA0), cudac.cupy_launcher(source, CUDA0)
table = torch.zeros(spec.channels, plan.entries, 4 + 2 * spec.groups, dtype=torch.int32)
tensors = [t.as_subclass(OnCuda) for t in (x, weight.detach(), torch.empty_like(x), torch.empty_like(x), torch.empty_like(x), table)]
scalars = (shape[0] * shape[1], shape[1], spec.nk, shape[2], shape[3], spec.groups, plan.entries)
args = (kernel, (plan.grid,), plan.block, *tensors, *scalars)
with torch._C.DisableTorchFunctionSubclass():
    b = rounds({"before": lambda: launch_old(*args, shared_bytes=plan.shared_bytes), "after": lambda: launch_new(*args, shared_bytes=plan.shared_bytes)})
print(f"(B) GPU launch closure (packing, stream, device, CuPy's call stubbed): before {b['before']:.1f} us, after {b['after']:.1f} us per call")
