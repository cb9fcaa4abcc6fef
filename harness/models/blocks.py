"""Small layers the three networks share, with timm's semantics.

timm (``timm.layers``: DropPath, GlobalResponseNorm, SEModule, LayerNorm2d) cannot be imported
beside this project's torch build: ``timm.layers`` imports torchvision, and PyPI's torchvision
wheels are CUDA builds whose ``torchvision/_C.so`` needs ``libc10_cuda.so`` and
``libtorch_cuda.so`` (absent from the CPU torch wheel; measured with torchvision 0.28.0, the
release pinned to torch 2.13.0, and 0.29.1: ``import timm.layers`` fails with "operator
torchvision::nms does not exist"). So these few layers are written here. Each states the timm
layer it matches; parameter names follow the official SW / UniRepLKNet code so that their
state dicts load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor: ``timm.layers.LayerNorm2d``
    (and the official ``LayerNorm(data_format="channels_first")``, the same function)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GlobalResponseNorm(nn.Module):
    """GRN on (N, H, W, C): ``x + beta + gamma * x * Nx`` with ``Nx = ||x||_HW / (mean_C ||x||_HW + eps)``,
    as ``timm.layers.GlobalResponseNorm(channels_last=True)`` and the official ``GRNwithNHWC``
    (whose ``gamma`` / ``beta`` names and (1, 1, 1, C) shapes are kept)."""

    def __init__(self, dim: int, eps: float = 1e-6, use_bias: bool = True) -> None:
        super().__init__()
        self.eps, self.use_bias = eps, use_bias
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        out = (self.gamma * nx + 1) * x
        return out + self.beta if self.beta is not None else out


class SEBlock(nn.Module):
    """Squeeze-and-excitation on (N, C, H, W): ``timm.layers.SEModule(C, rd_channels=internal)``
    (1x1 conv, ReLU, 1x1 conv, sigmoid gate), with the official names ``down`` / ``up``."""

    def __init__(self, input_channels: int, internal_neurons: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(input_channels, internal_neurons, kernel_size=1, bias=True)
        self.up = nn.Conv2d(internal_neurons, input_channels, kernel_size=1, bias=True)
        self.nonlinear = nn.ReLU(inplace=True)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(inputs, output_size=(1, 1))
        x = torch.sigmoid(self.up(self.nonlinear(self.down(x))))
        return inputs * x


class DropPath(nn.Module):
    """Stochastic depth per sample (``timm.layers.DropPath``, ``scale_by_keep=True``); identity
    in eval mode. The networks here are built with drop_path_rate 0, so they use nn.Identity."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class NCHWtoNHWC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class NHWCtoNCHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


def fuse_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of ``bn(conv(x))`` with the BN's running statistics folded in."""
    conv_bias = 0 if conv.bias is None else conv.bias
    std = (bn.running_var + bn.eps).sqrt()
    return conv.weight * (bn.weight / std).reshape(-1, 1, 1, 1), bn.bias + (conv_bias - bn.running_mean) * bn.weight / std


def init_weights(module: nn.Module) -> None:
    """The official networks' init: truncated normal (std 0.02) for conv and linear weights,
    zero biases (``nn.init.trunc_normal_``, the function timm's ``trunc_normal_`` wraps)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
