"""Known bad: computes in float16 and casts the result back to the input's dtype."""

import torch

from harness import Branches, small_conv
from harness.registry import Computes, Implementation
from tests.bad_impls._common import load_torch_roll

_naive = load_torch_roll()


def forward(x, weight, spec):
    branches = _naive.shift_add(small_conv(x.half(), weight.half(), spec), spec)
    return Branches(*(b.to(x.dtype) for b in branches))


IMPLEMENTATION = Implementation(
    name="bad_float16", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
