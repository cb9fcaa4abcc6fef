"""The paper's atomicAdd SW kernel (``cuda_atomic.cu``), launched through cuda-python.

The harness runs the small grouped conv; this implementation does the shift-and-add as a
scatter (one thread per conv-output element, atomicAdd into up to 2E+1 output positions) and
its backward as the adjoint gather (deterministic). On a GPU the kernel is built by NVRTC and
launched with ``cuda.core`` on torch's current stream; on the CPU the very same source runs
as a host build (``harness.cudac.host``), which is how CI checks it without a GPU.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from harness import AUTOGRAD, Branches, Computes, Implementation, ShiftwiseSpec, compulsory_bytes, conv_output_elements, cudac, scatter_moves

KERNEL_SOURCE = Path(__file__).with_suffix(".cu")
BLOCK = 256
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
#: Largest element count addressed; the official kernel's 32-bit indexing overflows past 2**31.
#: Ours is 64-bit; this bound only guards the grid size (2**31 - 1 blocks of BLOCK threads).
MAX_ELEMENTS = (2**31 - 1) * BLOCK


@functools.lru_cache(maxsize=64)
def _tables(spec: ShiftwiseSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pad_hv, idx_identit = spec.to_official_tables()
    tables = (pad_hv, idx_identit, spec.active.reshape(-1).astype(np.uint8))
    # The kernels index these as flat row-major arrays: copies, contiguous, on the device.
    return tuple(torch.tensor(table, device=device).contiguous() for table in tables)


def _launch(kernel: str, spec: ShiftwiseSpec, y_shape, tensors, device: torch.device) -> None:
    batch, _, hy, wy = y_shape
    e = spec.extra_pad
    elements = conv_output_elements(spec, (batch, spec.channels, hy - 2 * e, wy - 2 * e))
    if elements > MAX_ELEMENTS:
        raise ValueError(f"cuda_atomic: {elements} conv-output elements exceed the {MAX_ELEMENTS} this launch covers")
    pad_hv, idx_identit, active = _tables(spec, device)
    module = cudac.load_module(KERNEL_SOURCE, device)
    module.launch(
        kernel,
        (-(-elements // BLOCK),),
        (BLOCK,),
        *(t.data_ptr() for t in tensors),
        pad_hv.data_ptr(),
        idx_identit.data_ptr(),
        active.data_ptr(),
        batch,
        spec.channels,
        spec.nk,
        spec.groups,
        hy - 2 * e,
        wy - 2 * e,
        e,
    )


class _ScatterShiftAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, spec: ShiftwiseSpec):
        y = y.contiguous()
        e = spec.extra_pad
        shape = (y.shape[0], spec.channels, y.shape[2] - 2 * e, y.shape[3] - 2 * e)
        outputs = [y.new_zeros(shape) for _ in range(3)]
        _launch(f"sw_scatter_{_SUFFIX[y.dtype]}", spec, y.shape, [y, *outputs], y.device)
        ctx.spec, ctx.y_shape = spec, y.shape
        return tuple(outputs)

    @staticmethod
    def backward(ctx, grad_h, grad_v, grad_i):
        grads = [g.contiguous() for g in (grad_h, grad_v, grad_i)]
        grad_y = grads[0].new_empty(ctx.y_shape)
        _launch(f"sw_gather_adjoint_{_SUFFIX[grad_y.dtype]}", ctx.spec, ctx.y_shape, [*grads, grad_y], grad_y.device)
        return grad_y, None


def shift_add(y: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    return Branches(*_ScatterShiftAdd.apply(y, spec))


def traffic(spec: ShiftwiseSpec, shape, itemsize: int) -> int:
    """Bytes moved: compulsory bytes, plus the conv output y written once and read once (active
    kernels) and the outputs zero-filled before the scatter (DRAM traffic), plus a read and a
    write of an output per atomic move, which is L2 traffic (``atomic_l2_bytes``), not DRAM:
    the kernels report subtracts it from the DRAM bound. (When the outputs do not fit in L2,
    SW-tiny stage 1 at batch 64 with 144 MB of outputs, some of it reaches DRAM as well.)"""
    y_elements = conv_output_elements(spec, shape)
    active_y_elements = y_elements // spec.active.size * int(spec.active.sum())
    batch, channels, height, width = shape
    return (
        compulsory_bytes(spec, shape, itemsize)
        + itemsize * (y_elements + active_y_elements)
        + itemsize * 3 * batch * channels * height * width
        + atomic_l2_bytes(spec, shape, itemsize)
    )


def atomic_l2_bytes(spec: ShiftwiseSpec, shape, itemsize: int) -> int:
    """L2 traffic of the scatter's atomics: a read and a write of an output per move."""
    return itemsize * 2 * scatter_moves(spec, shape)


def kernel_figures(arch: str) -> list:
    """ptxas and SASS figures of every kernel; the float32 scatter's launch on each SW-tiny
    stage (one thread per conv-output element, one RED per in-map move)."""

    launches = []
    for case, spec, shape in cudac.report_stages():
        elements = conv_output_elements(spec, shape)
        # Its own DRAM bytes: the active y read, the outputs written back once (their atomics'
        # read-modify-writes stay in the L2: a plane's moves come from consecutive blocks).
        active = elements // spec.active.size * int(spec.active.sum())
        dram = 4 * active + 4 * 3 * shape[0] * shape[1] * shape[2] * shape[3]
        launches.append(cudac.Launch(case, -(-elements // BLOCK), (BLOCK,), 0, 0, scatter_moves(spec, shape),
                               l2_bytes=atomic_l2_bytes(spec, shape, 4), dram_bytes=dram))  # fmt: skip
    compiled = cudac.compile_cuda(cudac.CudaSource.read(KERNEL_SOURCE), arch)
    return cudac.figures_of(compiled, {"sw_scatter_f32": launches})


IMPLEMENTATION = Implementation(
    name="cuda_atomic",
    rank=20,  # impl="auto" preference (the layer benchmarks' ranking)
    fn=shift_add,
    computes=Computes.SHIFT_ADD,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    execution=lambda device: cudac.execution(KERNEL_SOURCE, device),
    autograd=True,
    backward=AUTOGRAD,
    description="the paper's scatter kernel: one thread per conv-output element, atomicAdd into up to 2E+1 outputs",
    traffic=traffic,
    kernel_figures=kernel_figures,
)
