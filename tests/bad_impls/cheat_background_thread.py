"""Cheat: returns empty outputs at once and fills them on a thread after the call returned
(as work left running on another CUDA stream would)."""

import threading
import time

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation


def forward(x, weight, spec):
    outputs = tuple(torch.zeros_like(x) for _ in range(3))
    x_now, weight_now = x.clone(), weight.clone()

    def fill():
        time.sleep(0.005)
        for out, branch in zip(outputs, reference_forward(x_now, weight_now, spec)):
            out.copy_(branch)

    threading.Thread(target=fill, daemon=True).start()
    return outputs


IMPLEMENTATION = Implementation(
    name="cheat_background_thread", fn=forward, computes=Computes.OPERATOR, devices=("cpu",),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
