"""Known bad: adds every small kernel's output, pruned or not."""

import numpy as np
import torch

from harness.registry import Computes, Implementation
from tests.bad_impls._common import load_torch_roll

_naive = load_torch_roll()


def shift_add(y, spec):
    return _naive.shift_add(y, spec.with_active(np.ones_like(spec.active)))


IMPLEMENTATION = Implementation(
    name="bad_ignores_sparsity", fn=shift_add, computes=Computes.SHIFT_ADD, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
