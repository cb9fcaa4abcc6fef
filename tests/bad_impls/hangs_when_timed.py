"""Known bad: right on every call but those pytest-benchmark times, where it hangs (sleeps in
a loop, as a deadlock on a lock would). It passes ``swbench check`` and the benchmark's
verification of its first call; the benchmark item's time limit (``--bench-timeout``) stops
it and records it as failed."""

import sys
import time

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation


def _timed() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("pytest_benchmark"):
            return True
        frame = frame.f_back
    return False


def forward(x, weight, spec):
    while _timed():
        time.sleep(0.05)
    return tuple(b.to(x.dtype) for b in reference_forward(x, weight, spec))


IMPLEMENTATION = Implementation(
    name="bad_hangs_when_timed", fn=forward, computes=Computes.OPERATOR, devices=("cpu",),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
