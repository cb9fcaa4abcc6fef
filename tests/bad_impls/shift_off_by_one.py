"""Known bad: the strip branches use shifts s[t] + 1 instead of s[t] (one pixel too far)."""

import torch
import torch.nn.functional as F

from harness import Branches, merge_kernels
from harness.reference import merged_forward
from harness.registry import Computes, Implementation


def forward(x, weight, spec):
    h, v, i = merged_forward(x, merge_kernels(weight, spec), spec)
    # Output column x reading y at x - (s + 1) is the correct output moved right by one.
    h = F.pad(h, (1, 0))[..., :-1]
    v = F.pad(v, (0, 0, 1, 0))[..., :-1, :]
    return Branches(h, v, i)


IMPLEMENTATION = Implementation(
    name="bad_shift_off_by_one", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
