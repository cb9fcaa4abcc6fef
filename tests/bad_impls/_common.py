"""Shared by the known-bad implementations: the correct naive form they each break one way."""

import importlib.util
from pathlib import Path


def load_torch_roll():
    """The project's torch_roll module (loaded by path: impls/ is a folder, not a package)."""
    path = Path(__file__).resolve().parents[2] / "impls" / "torch_roll.py"
    spec = importlib.util.spec_from_file_location("bad_impls_base_torch_roll", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adjoint_backward(x, weight, spec, grad_h, grad_v, grad_i, *, reverse=True, mask=True, wrong_channel=False):
    """The SW operator's backward written out: the adjoint of torch_roll's shift-add (every
    move reversed: the gradient of y at a move's source pulls the branch gradient at its
    target), then the small conv's backward by autograd. The keywords break it one way each:
    ``reverse=False`` moves the gradients the forward's way (the shifts not transposed);
    ``mask=False`` lets pruned kernels receive gradient; ``wrong_channel`` adds the vertical
    branch's gradient into the next channel's kernels."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from harness.reference import small_conv

    naive = load_torch_roll()
    e, nk = spec.extra_pad, spec.nk
    batch, channels, height, width = x.shape
    hy, wy = height + 2 * e, width + 2 * e
    margin = max(abs(s) for s in spec.shifts) + max(height, width) + 2 * e
    wide = x.new_zeros(batch, channels * nk, hy + 2 * margin, wy + 2 * margin)
    active = torch.as_tensor(spec.active.reshape(-1).copy() if mask else np.ones(channels * nk, bool))
    sign = 1 if reverse else -1
    for g in range(spec.groups):
        for t, s in enumerate(spec.shifts):
            s = sign * s
            # Oh[c, i, x] reads y[c*nk + j, i + e, x - s]: its gradient goes back there.
            flat = torch.as_tensor(naive._kernels_at_slot(spec.slot_h, spec, t, g))
            rows, cols = slice(margin + e, margin + e + height), slice(margin - s, margin - s + width)
            wide[:, flat, rows, cols] += torch.where(active[flat][None, :, None, None], grad_h, 0)
            flat = torch.as_tensor(naive._kernels_at_slot(spec.slot_v, spec, t, g))
            if wrong_channel:
                flat = (flat + nk) % (channels * nk)
            rows, cols = slice(margin - s, margin - s + height), slice(margin + e, margin + e + width)
            wide[:, flat, rows, cols] += torch.where(active[flat][None, :, None, None], grad_v, 0)
        flat = torch.as_tensor(np.arange(channels) * nk + spec.ident[g])
        rows, cols = slice(margin + e, margin + e + height), slice(margin + e, margin + e + width)
        wide[:, flat, rows, cols] += torch.where(active[flat][None, :, None, None], grad_i, 0)
    grad_y = wide[:, :, margin : margin + hy, margin : margin + wy]
    with torch.enable_grad():
        xx, ww = x.detach().requires_grad_(), weight.detach().requires_grad_()
        grad_x, grad_w = torch.autograd.grad(small_conv(xx, ww, spec), (xx, ww), grad_y)
    return grad_x, grad_w


def bad_backward_record(name, **breaks):
    """An implementation with torch_roll's (correct) forward and ``adjoint_backward`` broken by
    ``breaks``."""
    import functools

    import torch

    from harness.registry import Computes, Implementation

    return Implementation(
        name=name, fn=load_torch_roll().shift_add, computes=Computes.SHIFT_ADD, devices=("cpu",),
        dtypes=(torch.float32, torch.float64), backward=functools.partial(adjoint_backward, **breaks),
    )  # fmt: skip
