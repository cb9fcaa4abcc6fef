"""Example plug-in: the SW operator as three depthwise strip convolutions.

The rep-merged form (``harness.merge_kernels``: every active small kernel placed at its slot)
run with PyTorch's depthwise conv, each branch with its own asymmetric padding. It lives in its
own distribution and reaches the harness only through its entry point.
"""

import torch
import torch.nn.functional as F

from harness import Branches, Computes, Implementation, ShiftwiseSpec, merge_kernels


def strips(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    kernels = merge_kernels(weight, spec)
    half = spec.big_kernel // 2
    far = spec.nk * spec.small_kernel - 1 - half  # the last strip tap's offset (> half when k does not divide M)
    r, c = spec.small_kernel // 2, spec.channels
    h = F.conv2d(F.pad(x, (half, far, r, r)), kernels.h, groups=c)
    v = F.conv2d(F.pad(x, (r, r, half, far)), kernels.v, groups=c)
    i = F.conv2d(x, kernels.i, padding=r, groups=c)
    return Branches(h, v, i)


IMPLEMENTATION = Implementation(
    name="demo_strips",
    fn=strips,
    computes=Computes.OPERATOR,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    description="example plug-in: three depthwise strip convolutions of the merged kernels",
)
