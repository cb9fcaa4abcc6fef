"""Known bad: returns the horizontal and vertical branches in each other's place."""

import torch

from harness import Branches, reference_forward
from harness.registry import Computes, Implementation


def forward(x, weight, spec):
    h, v, i = reference_forward(x, weight, spec)
    return Branches(v, h, i)


IMPLEMENTATION = Implementation(
    name="bad_swapped_branches", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
