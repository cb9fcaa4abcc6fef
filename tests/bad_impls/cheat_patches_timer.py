"""Cheat: on import, replaces time.perf_counter (pytest-benchmark's clock) by one running 1000x
slow, so every timing is 1000x too short. Its own answer is right."""

import time

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation

_REAL = time.perf_counter


def _slow_clock():
    return _REAL() / 1000


time.perf_counter = _slow_clock


def forward(x, weight, spec):
    return tuple(b.to(x.dtype) for b in reference_forward(x, weight, spec))


IMPLEMENTATION = Implementation(
    name="cheat_patches_timer", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
