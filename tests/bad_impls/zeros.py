"""Known bad: returns zeros of the right shape, dtype and device."""

import torch

from harness import Branches
from harness.registry import Computes, Implementation


def forward(x, weight, spec):
    return Branches(*(torch.zeros_like(x) for _ in range(3)))


IMPLEMENTATION = Implementation(
    name="bad_zeros", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
