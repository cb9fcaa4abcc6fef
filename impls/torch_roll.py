"""Naive PyTorch SW operator: the harness's grouped conv, then one slice-and-add per slot.

This is the form of the official code before any kernel work: the conv output ``y``
(nk times the input's size) is materialised, and every (group, slot) pair adds a shifted
window of it into the output, E*nk times per strip branch. It runs wherever torch does and is
differentiable through autograd.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness import AUTOGRAD, Branches, Computes, Implementation, Role, ShiftwiseSpec


def _kernels_at_slot(slots: np.ndarray, spec: ShiftwiseSpec, t: int, g: int) -> np.ndarray:
    """For group g, the flat index c*nk + j of the kernel each channel puts at slot t."""
    kernel = np.argmax(slots[g] == t, axis=1)  # exactly one j per channel (a permutation)
    return np.arange(spec.channels) * spec.nk + kernel


def _gather_active(y: torch.Tensor, flat_kernels: np.ndarray, spec: ShiftwiseSpec) -> torch.Tensor:
    """y's channels ``flat_kernels`` (one per output channel); pruned kernels read as zeros."""
    picked = y[:, torch.as_tensor(flat_kernels, device=y.device)]
    active = torch.as_tensor(spec.active.reshape(-1)[flat_kernels], device=y.device)
    # where(), not a multiply: a pruned kernel's NaN output must not leak in.
    return torch.where(active[None, :, None, None], picked, torch.zeros((), dtype=y.dtype, device=y.device))


def shift_add(y: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    e = spec.extra_pad
    height, width = y.shape[2] - 2 * e, y.shape[3] - 2 * e
    # A slot whose shift moves its window wholly off y (|s| >= the map plus y's border) adds only
    # zeros: it is left out, so the padding is bounded by the map, not by the big kernel.
    reach = max(height, width) + 2 * e
    on_map = {t: s for t, s in enumerate(spec.shifts) if abs(s) < reach}
    shifts = list(on_map.values()) or [0]
    # Zero-pad y so every shifted window is a plain slice: output column x reads y column x - s.
    before = max(0, max(shifts))
    after_w = max(0, max(width - 1 - s for s in shifts) - (y.shape[3] - 1))
    after_h = max(0, max(height - 1 - s for s in shifts) - (y.shape[2] - 1))
    y_wide = F.pad(y, (before, after_w, 0, 0))
    y_tall = F.pad(y, (0, 0, before, after_h))

    batch = y.shape[0]
    out_h = y.new_zeros(batch, spec.channels, height, width)
    out_v = y.new_zeros(batch, spec.channels, height, width)
    out_i = y.new_zeros(batch, spec.channels, height, width)
    for g in range(spec.groups):
        for t, s in on_map.items():
            window = _gather_active(y_wide, _kernels_at_slot(spec.slot_h, spec, t, g), spec)
            out_h = out_h + window[:, :, e : e + height, before - s : before - s + width]
            window = _gather_active(y_tall, _kernels_at_slot(spec.slot_v, spec, t, g), spec)
            out_v = out_v + window[:, :, before - s : before - s + height, e : e + width]
        identity = np.arange(spec.channels) * spec.nk + spec.ident[g]
        window = _gather_active(y, identity, spec)
        out_i = out_i + window[:, :, e : e + height, e : e + width]
    return Branches(out_h, out_v, out_i)


IMPLEMENTATION = Implementation(
    name="torch_roll",
    rank=10,  # impl="auto" preference (the layer benchmarks' ranking)
    fn=shift_add,
    computes=Computes.SHIFT_ADD,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    autograd=True,
    backward=AUTOGRAD,
    role=Role.PYTORCH_WAY,
    description="grouped conv, then E*nk slice-and-adds per strip branch (PyTorch ops, autograd)",
)
