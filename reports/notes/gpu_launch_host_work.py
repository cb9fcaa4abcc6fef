"""Host work per call of cupy_onepass's launch path, measured on the CPU (no GPU here).

What a GPU call repeats before the driver call: the cached configuration lookup (plan,
specialised source, launcher), the cached entry table, the argument packing of the 14 kernel
arguments (``cudac.kernel_arguments``, the GPU path's own code); the three output
allocations (``torch.empty_like``) are timed apart (the CPU allocator here, not a GPU's caching one). Not
included: CuPy's kernel call and the driver's launch (a few microseconds on a GPU, not
measurable here). Beside it, what the per-call ``specialise`` used to cost (read and hash the
.cu). Run: ``.venv/bin/python reports/notes/gpu_launch_host_work.py``."""

import hashlib
import statistics
import sys
import timeit

import torch

from harness import ShiftwiseSpec, cudac, implementations
from harness.cases import load_cases

module = sys.modules[implementations()["cupy_onepass"].fn.__module__]
(case,) = [c for c in load_cases(suites=["sw_tiny"]) if c.name == "tiny-s3-b64"]
spec, shape = case.spec(), case.input_shape
x, weight = torch.randn(shape), torch.randn(spec.weight_shape)
device = torch.device("cpu")
launch, kernel, plan = module._prepared(spec, x.shape, x.dtype, device)  # made once
table = module._device_table(spec, shape[2], shape[3], device)
params = cudac.CudaSource.read(cudac.specialise(module.KERNEL_SOURCE, {**plan.defines, "SW_THREADS": 1024, "SW_MIN_BLOCKS": 1})).kernels[kernel].params
outs = [torch.empty_like(x) for _ in range(3)]


def per_call():
    launch_, kernel_, plan_ = module._prepared(spec, x.shape, x.dtype, device)
    table_ = module._device_table(spec, shape[2], shape[3], device)
    cudac.kernel_arguments(kernel_, params, (x, weight, *outs, table_, shape[0] * shape[1], shape[1], spec.nk, shape[2], shape[3],
                                             spec.groups, plan_.entries), device)


def old_specialise():
    text = module.KERNEL_SOURCE.read_text()
    hashlib.sha256(text.encode()).hexdigest()


def allocations():
    [torch.empty_like(x) for _ in range(3)]


for name, fn in (("lookups and argument packing per call", per_call),
                 ("the three output allocations (CPU allocator: 12 MB each; a GPU's caching allocator is another cost)", allocations), ("the old per-call specialise (read + sha256 of the .cu)", old_specialise)):
    runs = [timeit.timeit(fn, number=200) / 200 for _ in range(7)]
    print(f"{name}: median {statistics.median(runs) * 1e6:.1f} us (7 x 200 calls)")
