"""Cheat: writes its branch h into the input x's memory and returns x as h (no allocation)."""

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation


def forward(x, weight, spec):
    h, v, i = (b.to(x.dtype) for b in reference_forward(x, weight, spec))
    x.copy_(h)
    return x, v, i


IMPLEMENTATION = Implementation(
    name="cheat_output_in_input", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
