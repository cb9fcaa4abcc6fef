"""Peers: the large-kernel operators the SW operator is meant to replace, at the same layers.

They compute other operators (or the SW operator's merged form), so they are benchmarked
beside the implementations but never checked against the reference. Each runs as a deployed
model would: kernels prepared once, only the convolutions timed, in true FP32 (TF32 off, like
the implementations) with whatever algorithms torch picks as fastest.

- ``rep_merged``: the rep-merged reference itself, three depthwise convs with the merged
  k x nk*k, nk*k x k and k x k kernels (exact asymmetric padding);
- ``rep_cross``: the three merged kernels summed into one cross-shaped (2R+1) x (2R+1)
  depthwise kernel (R = the merged kernels' larger half-width), one conv, one output;
- ``slak_strips``: SLaK's M x 5 + 5 x M + 5 x 5 depthwise kernels (the SLaK-T block);
- ``unireplk_13x13``: UniRepLKNet-T's 13 x 13 depthwise conv after re-parameterization.

A peer's ``flops`` are those its convolutions execute (2 per tap per output element, zero
taps of the cross kernel included, since a dense conv runs them); its compulsory bytes are
its input, kernels and outputs, each moved once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.cases import Case
from harness.reference import exact_math, merge_kernels, merged_forward
from harness.spec import ShiftwiseSpec


@dataclass(frozen=True)
class PreparedPeer:
    """A ready-to-time call and what it does by count."""

    run: Callable[[], object]
    flops: int
    compulsory_bytes: int


@dataclass(frozen=True)
class Peer:
    name: str
    description: str
    #: (case, x, sw weight) -> PreparedPeer; x is the case's input, the weight the SW small kernels
    prepare: Callable[[Case, torch.Tensor, torch.Tensor], PreparedPeer]


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    return F.conv2d(F.pad(x, padding), kernel, groups=x.shape[1])


def _bytes(x: torch.Tensor, kernels: list[torch.Tensor], outputs: int) -> int:
    return x.element_size() * (x.numel() * (1 + outputs) + sum(k.numel() for k in kernels))


def _conv_flops(x: torch.Tensor, kernels: list[torch.Tensor]) -> int:
    """2 FLOPs per tap per output element of depthwise convs keeping x's spatial size."""
    batch, _, height, width = x.shape
    return 2 * batch * height * width * sum(k.numel() for k in kernels)


def _rep_merged(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
    spec = case.spec()
    kernels = merge_kernels(weight, spec)
    merged = [kernels.h, kernels.v, kernels.i]
    return PreparedPeer(
        lambda: merged_forward(x, kernels, spec, deterministic=False), _conv_flops(x, merged), _bytes(x, merged, 3)
    )


def cross_kernel(weight: torch.Tensor, spec: ShiftwiseSpec) -> torch.Tensor:
    """The three merged kernels summed into one centred (C, 1, 2R+1, 2R+1) kernel."""
    kernels = merge_kernels(weight, spec)
    half, r = spec.big_kernel // 2, spec.small_kernel // 2
    extent = spec.nk * spec.small_kernel
    radius = max(half, extent - 1 - half)
    cross = weight.new_zeros(spec.channels, 1, 2 * radius + 1, 2 * radius + 1)
    # Tap (a, b) of a merged kernel sits at offset (a - its centre row, b - its centre column).
    cross[:, :, radius - r : radius + r + 1, radius - half : radius - half + extent] += kernels.h
    cross[:, :, radius - half : radius - half + extent, radius - r : radius + r + 1] += kernels.v
    cross[:, :, radius - r : radius + r + 1, radius - r : radius + r + 1] += kernels.i
    return cross


def _rep_cross(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
    kernel = cross_kernel(weight, case.spec())
    radius = kernel.shape[-1] // 2

    def run() -> torch.Tensor:
        with exact_math(deterministic=False):
            return F.conv2d(x, kernel, padding=radius, groups=x.shape[1])

    return PreparedPeer(run, _conv_flops(x, [kernel]), _bytes(x, [kernel], 1))


def _random_kernels(case: Case, x: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(case.seed)
    return [
        torch.randn(case.channels, 1, rows, cols, generator=generator, dtype=torch.float64).to(x.dtype).to(x.device)
        for rows, cols in shapes
    ]


def _slak_strips(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
    m = case.big_kernel
    tall, wide, small = _random_kernels(case, x, [(m, 5), (5, m), (5, 5)])

    def run() -> tuple[torch.Tensor, ...]:
        with exact_math(deterministic=False):
            return (
                _depthwise(x, tall, (2, 2, m // 2, m // 2)),
                _depthwise(x, wide, (m // 2, m // 2, 2, 2)),
                _depthwise(x, small, (2, 2, 2, 2)),
            )

    return PreparedPeer(run, _conv_flops(x, [tall, wide, small]), _bytes(x, [tall, wide, small], 3))


def _unireplk(case: Case, x: torch.Tensor, weight: torch.Tensor) -> PreparedPeer:
    (kernel,) = _random_kernels(case, x, [(13, 13)])

    def run() -> torch.Tensor:
        with exact_math(deterministic=False):
            return F.conv2d(x, kernel, padding=6, groups=x.shape[1])

    return PreparedPeer(run, _conv_flops(x, [kernel]), _bytes(x, [kernel], 1))


def peers() -> dict[str, Peer]:
    """Every peer, by name."""
    records = [
        Peer("rep_merged", "rep-merged reference: 3 depthwise convs (k x nk*k, nk*k x k, k x k)", _rep_merged),
        Peer("rep_cross", "one depthwise conv with the summed cross-shaped (2R+1)^2 kernel", _rep_cross),
        Peer("slak_strips", "SLaK: M x 5 + 5 x M + 5 x 5 depthwise convs", _slak_strips),
        Peer("unireplk_13x13", "UniRepLKNet: one 13 x 13 depthwise conv", _unireplk),
    ]
    return {peer.name: peer for peer in records}
