"""Cheat: caches its result by input address and returns fresh copies of it (no aliasing to
see), so a second call on the same buffers with new values gets the old answer."""

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation

_CACHE = {}


def forward(x, weight, spec):
    key = (x.data_ptr(), weight.data_ptr(), tuple(x.shape))
    if key not in _CACHE:
        _CACHE[key] = tuple(b.to(x.dtype) for b in reference_forward(x, weight, spec))
    return tuple(b.clone() for b in _CACHE[key])


IMPLEMENTATION = Implementation(
    name="cheat_caches_by_pointer", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
