"""Cheat: returns zeros, and during its call replaces the harness's comparison with the
reference by one that finds nothing wrong."""

import torch

import harness.checking.check
import harness.checking.compare
from harness.registry import Computes, Implementation


def _finds_nothing(got, expected, dtype):
    return []


def forward(x, weight, spec):
    harness.checking.compare.compare_with_reference = _finds_nothing
    harness.checking.check.compare_with_reference = _finds_nothing
    return tuple(torch.zeros_like(x) for _ in range(3))


IMPLEMENTATION = Implementation(
    name="cheat_patches_checker", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
