"""Validation of the SW operator's inputs, shared by the reference and every implementation
(the harness validates once, so implementations may assume well-formed inputs)."""

from __future__ import annotations

import torch

from harness.spec import ShiftwiseSpec


def validate_inputs(
    x: object,
    weight: object,
    spec: object,
    *,
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64),
    devices: tuple[str, ...] = ("cpu", "cuda"),
    name: str = "the SW operator",
) -> None:
    """Raise TypeError / ValueError naming what ``name`` expected and what it got."""
    if not isinstance(spec, ShiftwiseSpec):
        raise TypeError(f"{name}: spec must be a ShiftwiseSpec, got {type(spec).__name__}")
    for label, tensor in (("x", x), ("weight", weight)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name}: {label} must be a torch.Tensor, got {type(tensor).__name__}")
    assert isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != spec.channels:
        raise ValueError(f"{name}: x must have C = {spec.channels} channels (the spec's), got shape {tuple(x.shape)}")
    if min(x.shape) == 0:
        raise ValueError(f"{name}: x must not be empty, got shape {tuple(x.shape)}")
    if tuple(weight.shape) != spec.weight_shape:
        raise ValueError(
            f"{name}: weight must have shape (C*nk, 1, k, k) = {spec.weight_shape}, got {tuple(weight.shape)}"
        )
    if x.dtype != weight.dtype:
        raise TypeError(f"{name}: x and weight must have the same dtype, got {x.dtype} and {weight.dtype}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name}: supports dtypes {', '.join(map(str, dtypes))}, got {x.dtype}")
    if x.device != weight.device:
        raise ValueError(f"{name}: x and weight must be on the same device, got {x.device} and {weight.device}")
    if x.device.type not in devices:
        raise ValueError(f"{name}: runs on {', '.join(devices)}, got a tensor on {x.device}")
