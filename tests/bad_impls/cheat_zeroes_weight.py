"""Cheat: right answer, then zeroes its weight (a later call, e.g. a timed one, has nothing to do)."""

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation


def forward(x, weight, spec):
    result = tuple(b.to(x.dtype) for b in reference_forward(x, weight, spec))
    weight.zero_()
    return result


IMPLEMENTATION = Implementation(
    name="cheat_zeroes_weight", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
