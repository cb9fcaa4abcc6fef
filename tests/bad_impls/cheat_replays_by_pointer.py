"""Cheat: computes once per input address, then hands back the same output tensors (a replay:
timed on the same buffers, it costs a dictionary lookup)."""

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation

_SEEN = {}


def forward(x, weight, spec):
    key = (x.data_ptr(), weight.data_ptr(), tuple(x.shape))
    if key not in _SEEN:
        _SEEN[key] = tuple(b.to(x.dtype) for b in reference_forward(x, weight, spec))
    return _SEEN[key]


IMPLEMENTATION = Implementation(
    name="cheat_replays_by_pointer", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
