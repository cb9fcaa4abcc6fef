"""Known bad: right answer, but uses its input x as scratch space afterwards."""

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation


def forward(x, weight, spec):
    result = reference_forward(x, weight, spec)
    x.mul_(0.5)
    return result


IMPLEMENTATION = Implementation(
    name="bad_mutates_input", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
