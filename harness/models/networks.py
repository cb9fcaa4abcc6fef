"""SW-T/S, SLaK-T/S and UniRepLKNet-T/S, built by name (``build_network``), random-initialised.

Structures follow the official code: lidc54/shift-wiseConv ``backbones/SW_v2_unirep.py``
(``ShiftWise_v2``: UniRepLKNet's stem, downsampling and block, with the SW layer as the large
kernel), VITA-Group/SLaK ``models/SLaK.py`` (ConvNeXt with M x 5 + 5 x M + 5 x 5 depthwise
branches, width factor 1.3) and AILab-CVC/UniRepLKNet ``unireplknet.py`` (dilated-reparam 13 x 13
blocks and 3 x 3 blocks). Every network has ``reparameterize()`` (what the official throughput
script calls before timing); the "_rep" names return the deployed form directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.blocks import (
    GlobalResponseNorm, LayerNorm2d, NCHWtoNHWC, NHWCtoNCHW, SEBlock, fuse_bn, init_weights,
)  # fmt: skip
from harness.models.layers import MergedShiftwiseConv2d, ShiftwiseConv2d, merge_all, set_impl


# ----------------------------------------------------------------------------- skeletons
class _Net(nn.Module):
    """Stem + downsampling layers + stages, global average pool, LayerNorm, linear head."""

    #: memory format the benchmark runs this network in (a deployment's choice)
    memory_format = torch.contiguous_format

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x.mean([-2, -1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    @torch.no_grad()
    def reparameterize(self) -> _Net:
        """Every block's ``reparameterize()`` (in place), as the official throughput script."""
        for module in list(self.modules()):
            if module is not self and hasattr(module, "reparameterize"):
                module.reparameterize()
        return self

    def _finish(self, dims: Sequence[int], num_classes: int) -> None:
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(init_weights)


def _unirep_downsampling(in_chans: int, dims: Sequence[int]) -> nn.ModuleList:
    layers = nn.ModuleList([nn.Sequential(
        nn.Conv2d(in_chans, dims[0] // 2, kernel_size=3, stride=2, padding=1),
        LayerNorm2d(dims[0] // 2, eps=1e-6), nn.GELU(),
        nn.Conv2d(dims[0] // 2, dims[0], kernel_size=3, stride=2, padding=1),
        LayerNorm2d(dims[0], eps=1e-6),
    )])  # fmt: skip
    for i in range(3):
        layers.append(nn.Sequential(
            nn.Conv2d(dims[i], dims[i + 1], kernel_size=3, stride=2, padding=1), LayerNorm2d(dims[i + 1], eps=1e-6)
        ))  # fmt: skip
    return layers


class _UniRepFFN(nn.Module):
    """The UniRepLKNet / SW block after its large kernel: BN, SE, Linear, GELU, GRN, Linear, BN,
    layer scale, residual (``reparameterize`` folds BNs, GRN bias and layer scale, as official)."""

    def _init_ffn(self, dim: int, layer_scale: float, norm: bool = True) -> None:
        self.norm = nn.BatchNorm2d(dim) if norm else nn.Identity()
        self.se = SEBlock(dim, dim // 4)
        self.pwconv1 = nn.Sequential(NCHWtoNHWC(), nn.Linear(dim, 4 * dim))
        self.act = nn.Sequential(nn.GELU(), GlobalResponseNorm(4 * dim))
        self.pwconv2 = nn.Sequential(nn.Linear(4 * dim, dim, bias=False), NHWCtoNCHW(), nn.BatchNorm2d(dim))
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))
        self.drop_path = nn.Identity()

    def _residual(self, y: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.se(self.norm(y)))))
        if self.gamma is not None:
            y = self.gamma.view(1, -1, 1, 1) * y
        return self.drop_path(y)

    @torch.no_grad()
    def _reparameterize_ffn(self) -> None:
        """UniRepLKNetBlock.reparameterize's second half: GRN bias, pwconv2's BN and the layer
        scale folded into one Linear with bias."""
        final_scale = self.gamma.data if self.gamma is not None else 1
        self.gamma = None
        grn = self.act[1]
        if grn.beta is not None and len(self.pwconv2) == 3:
            linear, bn = self.pwconv2[0], self.pwconv2[2]
            grn_bias = (linear.weight @ grn.beta.view(-1, 1)).squeeze(-1)
            grn.beta = None
            std = (bn.running_var + bn.eps).sqrt()
            new = nn.Linear(linear.in_features, linear.out_features, bias=True).to(linear.weight)
            new.weight.copy_(linear.weight * (bn.weight / std * final_scale).view(-1, 1))
            linear_bias = grn_bias if linear.bias is None else linear.bias + grn_bias
            new.bias.copy_((bn.bias + (linear_bias - bn.running_mean) * bn.weight / std) * final_scale)
            self.pwconv2 = nn.Sequential(new, self.pwconv2[1])


# ----------------------------------------------------------------------------- SW
class SWBlock(_UniRepFFN):
    """The official ShiftWise_v2 ``Block``: SW layer, BN, SE, GRN MLP, BN, layer scale, residual."""

    def __init__(self, dim: int, big_kernel: int, small_kernel: int, *, ghost_ratio: float = 0.23,
                 N_path: int = 2, N_rep: int = 4, impl: str = "auto", layer_scale: float = 1e-6) -> None:  # fmt: skip
        super().__init__()
        self.large_kernel = ShiftwiseConv2d(dim, dim, big_kernel, small_kernel, group=dim, ghost_ratio=ghost_ratio,
                                            N_path=N_path, N_rep=N_rep, impl=impl)  # fmt: skip
        self._init_ffn(dim, layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._residual(self.large_kernel(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """The SW layer's ``reparameterize`` (N_path merged, branch BNs folded), then the FFN's
        folds (the official SW block merges N_path only; the rest is UniRepLKNet's, exact)."""
        if isinstance(self.large_kernel, ShiftwiseConv2d):
            self.large_kernel.reparameterize()
            if isinstance(self.norm, nn.BatchNorm2d):  # folded into the SW layer's output
                self.large_kernel.fold_following_bn(self.norm)
                self.norm = nn.Identity()
        self._reparameterize_ffn()


class ShiftWiseNet(_Net):
    """The official ``ShiftWise_v2``; ``kernel_size`` = the four stages' M and then k.

    Runs in channels_last: the SW layer's deployed form writes NHWC, the MLP's Linear layers
    read NHWC, and the stem's convs and the SE block keep channels_last (no layout copies)."""

    memory_format = torch.channels_last

    def __init__(self, depths: Sequence[int], dims: Sequence[int], kernel_size: Sequence[int] = (51, 49, 47, 13, 3),
                 *, ghost_ratio: float = 0.23, N_path: int = 2, N_rep: int = 4, impl: str = "auto",
                 in_chans: int = 3, num_classes: int = 1000) -> None:  # fmt: skip
        super().__init__()
        self.downsample_layers = _unirep_downsampling(in_chans, dims)
        self.stages = nn.ModuleList(
            nn.Sequential(*(SWBlock(dims[i], kernel_size[i], kernel_size[-1], ghost_ratio=ghost_ratio, N_path=N_path,
                                    N_rep=N_rep, impl=impl) for _ in range(depths[i])))
            for i in range(4)
        )  # fmt: skip
        self._finish(dims, num_classes)


# ----------------------------------------------------------------------------- UniRepLKNet
_DILATED = {13: ([5, 7, 3, 3, 3], [1, 2, 3, 4, 5]), 11: ([5, 5, 3, 3, 3], [1, 2, 3, 4, 5]),
            9: ([5, 5, 3, 3], [1, 2, 3, 4]), 7: ([5, 3, 3], [1, 2, 3])}  # fmt: skip


def _dilated_to_dense(kernel: torch.Tensor, rate: int) -> torch.Tensor:
    """A depthwise dilated kernel as the equivalent dense one (zeros between taps)."""
    c, _, k, _ = kernel.shape
    size = rate * (k - 1) + 1
    dense = kernel.new_zeros(c, 1, size, size)
    dense[:, :, ::rate, ::rate] = kernel
    return dense


class DilatedReparamBlock(nn.Module):
    """UniRepLKNet's large kernel: a K x K depthwise conv + BN plus dilated small convs + BNs,
    merged by ``merge_dilated_branches`` into one K x K conv with bias."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.lk_origin = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)
        self.kernel_sizes, self.dilates = _DILATED[kernel_size]
        self.origin_bn = nn.BatchNorm2d(channels)
        for k, r in zip(self.kernel_sizes, self.dilates):
            setattr(self, f"dil_conv_k{k}_{r}", nn.Conv2d(channels, channels, k, padding=(r * (k - 1) + 1) // 2,
                                                          dilation=r, groups=channels, bias=False))  # fmt: skip
            setattr(self, f"dil_bn_k{k}_{r}", nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.origin_bn is None:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in zip(self.kernel_sizes, self.dilates):
            out = out + getattr(self, f"dil_bn_k{k}_{r}")(getattr(self, f"dil_conv_k{k}_{r}")(x))
        return out

    @torch.no_grad()
    def merge_dilated_branches(self) -> None:
        if self.origin_bn is None:
            return
        kernel, bias = fuse_bn(self.lk_origin, self.origin_bn)
        big = kernel.shape[-1]
        for k, r in zip(self.kernel_sizes, self.dilates):
            branch_k, branch_b = fuse_bn(getattr(self, f"dil_conv_k{k}_{r}"), getattr(self, f"dil_bn_k{k}_{r}"))
            dense = _dilated_to_dense(branch_k, r)
            pad = big // 2 - dense.shape[-1] // 2
            kernel = kernel + F.pad(dense, [pad] * 4)
            bias = bias + branch_b
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        merged = nn.Conv2d(kernel.shape[0], kernel.shape[0], big, padding=big // 2, groups=kernel.shape[0], bias=True)
        merged = merged.to(kernel)
        merged.weight.copy_(kernel)
        merged.bias.copy_(bias)
        self.lk_origin = merged
        self.origin_bn = None


class UniRepLKNetBlock(_UniRepFFN):
    """The official ``UniRepLKNetBlock`` (kernel 13: dilated reparam; 3: plain depthwise)."""

    def __init__(self, dim: int, kernel_size: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        if kernel_size >= 7:
            self.dwconv = DilatedReparamBlock(dim, kernel_size)
        else:
            self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False)
        self._init_ffn(dim, layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._residual(self.dwconv(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.merge_dilated_branches()
        if isinstance(self.norm, nn.BatchNorm2d):
            conv = self.dwconv.lk_origin if isinstance(self.dwconv, DilatedReparamBlock) else self.dwconv
            kernel, bias = fuse_bn(conv, self.norm)
            merged = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                               groups=conv.groups, bias=True).to(kernel)  # fmt: skip
            merged.weight.copy_(kernel)
            merged.bias.copy_(bias)
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.lk_origin = merged
            else:
                self.dwconv = merged
            self.norm = nn.Identity()
        self._reparameterize_ffn()


UNIREP_T_KERNELS = ((3, 3, 3), (13, 13, 13), (13, 3) * 9, (13, 13, 13))
UNIREP_S_KERNELS = ((3, 3, 3), (13, 13, 13), (13, 3, 3) * 9, (13, 13, 13))


class UniRepLKNet(_Net):
    def __init__(self, depths: Sequence[int], dims: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                 in_chans: int = 3, num_classes: int = 1000) -> None:  # fmt: skip
        super().__init__()
        self.downsample_layers = _unirep_downsampling(in_chans, dims)
        self.stages = nn.ModuleList(
            nn.Sequential(*(UniRepLKNetBlock(dims[i], kernel_sizes[i][j]) for j in range(depths[i]))) for i in range(4)
        )
        self._finish(dims, num_classes)


# ----------------------------------------------------------------------------- SLaK
def _conv_bn(channels: int, kernel: tuple[int, int]) -> nn.Sequential:
    padding = (kernel[0] // 2, kernel[1] // 2)  # "same" output size for strip kernels too
    return nn.Sequential(
        dict_to_ordered(conv=nn.Conv2d(channels, channels, kernel, padding=padding, groups=channels, bias=False),
                        bn=nn.BatchNorm2d(channels))
    )  # fmt: skip


def dict_to_ordered(**modules: nn.Module):
    from collections import OrderedDict

    return OrderedDict(modules)


class ReparamLargeKernelConv(nn.Module):
    """SLaK's large kernel with ``Decom=True``: M x k + k x M strips and a k x k conv, each with
    BN; ``merge_kernel`` folds them into one M x M depthwise conv with bias ("SLaK Rep")."""

    def __init__(self, channels: int, kernel_size: int, small_kernel: int = 5) -> None:
        super().__init__()
        self.kernel_size, self.small_kernel = kernel_size, small_kernel
        self.Decom1 = _conv_bn(channels, (kernel_size, small_kernel))
        self.Decom2 = _conv_bn(channels, (small_kernel, kernel_size))
        self.small_conv = _conv_bn(channels, (small_kernel, small_kernel)) if small_kernel < kernel_size else None
        self.lkb_reparam: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lkb_reparam is not None:
            return self.lkb_reparam(x)
        out = self.Decom1(x) + self.Decom2(x)
        return out + self.small_conv(x) if self.small_conv is not None else out

    @torch.no_grad()
    def merge_kernel(self) -> None:
        if self.lkb_reparam is not None:
            return
        m, k = self.kernel_size, self.small_kernel
        k1, b1 = fuse_bn(self.Decom1.conv, self.Decom1.bn)
        k2, b2 = fuse_bn(self.Decom2.conv, self.Decom2.bn)
        kernel = F.pad(k1, [(m - k) // 2] * 2 + [0, 0]) + F.pad(k2, [0, 0] + [(m - k) // 2] * 2)
        bias = b1 + b2
        if self.small_conv is not None:
            ks, bs = fuse_bn(self.small_conv.conv, self.small_conv.bn)
            kernel, bias = kernel + F.pad(ks, [(m - k) // 2] * 4), bias + bs
        channels = kernel.shape[0]
        merged = nn.Conv2d(channels, channels, m, padding=m // 2, groups=channels, bias=True).to(kernel)
        merged.weight.copy_(kernel)
        merged.bias.copy_(bias)
        self.lkb_reparam = merged
        del self.Decom1, self.Decom2
        self.small_conv = None


class SLaKBlock(nn.Module):
    """The official SLaK ``Block`` (ConvNeXt's, with the decomposed large kernel)."""

    def __init__(self, dim: int, kernel_size: int, small_kernel: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.large_kernel = ReparamLargeKernelConv(dim, kernel_size, small_kernel)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.large_kernel(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + self.drop_path((self.gamma * y).permute(0, 3, 1, 2))

    def reparameterize(self) -> None:
        """SLaK's official timing merges the kernel only when asked ("Rep"); here nothing."""


class SLaK(_Net):
    def __init__(self, depths: Sequence[int], dims: Sequence[int], kernel_size: Sequence[int] = (51, 49, 47, 13, 5),
                 width_factor: float = 1.3, in_chans: int = 3, num_classes: int = 1000) -> None:  # fmt: skip
        super().__init__()
        dims = [int(d * width_factor) for d in dims]
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4),
                                                              LayerNorm2d(dims[0], eps=1e-6))])  # fmt: skip
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(LayerNorm2d(dims[i], eps=1e-6),
                                                        nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))  # fmt: skip
        self.stages = nn.ModuleList(
            nn.Sequential(*(SLaKBlock(dims[i], kernel_size[i], kernel_size[-1]) for _ in range(depths[i])))
            for i in range(4)
        )
        self._finish(dims, num_classes)


# ----------------------------------------------------------------------------- by name
@dataclass(frozen=True)
class NetworkInfo:
    """A network the harness builds: family, published figures (None: not published), label."""

    name: str
    family: str  # "sw", "slak" or "unireplknet"
    label: str
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    rep: bool = False
    #: published parameter count (millions) and GMACs at 224x224, and where they come from
    params_m: float | None = None
    gmacs: float | None = None
    source: str = ""


_UNIREP_SRC = "UniRepLKNet (Ding et al., CVPR 2024), ImageNet-1K table"
_SLAK_SRC = "SLaK (Liu et al., ICLR 2023), ImageNet-1K table"
NETWORKS: dict[str, NetworkInfo] = {info.name: info for info in (
    NetworkInfo("sw_tiny", "sw", "SW-tiny", (3, 3, 18, 3), (80, 160, 320, 640)),
    NetworkInfo("sw_small", "sw", "SW-small", (3, 3, 27, 3), (96, 192, 384, 768)),
    NetworkInfo("sw_tiny_rep", "sw", "SW-tiny Rep", (3, 3, 18, 3), (80, 160, 320, 640), rep=True),
    NetworkInfo("sw_small_rep", "sw", "SW-small Rep", (3, 3, 27, 3), (96, 192, 384, 768), rep=True),
    NetworkInfo("slak_tiny", "slak", "SLaK-T", (3, 3, 9, 3), (96, 192, 384, 768), params_m=30, gmacs=5.0, source=_SLAK_SRC),
    NetworkInfo("slak_small", "slak", "SLaK-S", (3, 3, 27, 3), (96, 192, 384, 768), params_m=55, gmacs=9.8, source=_SLAK_SRC),
    NetworkInfo("slak_tiny_rep", "slak", "SLaK-T Rep", (3, 3, 9, 3), (96, 192, 384, 768), rep=True),
    NetworkInfo("slak_small_rep", "slak", "SLaK-S Rep", (3, 3, 27, 3), (96, 192, 384, 768), rep=True),
    NetworkInfo("unireplknet_tiny", "unireplknet", "UniRepLKNet-T", (3, 3, 18, 3), (80, 160, 320, 640),
                params_m=31, gmacs=4.9, source=_UNIREP_SRC),
    NetworkInfo("unireplknet_small", "unireplknet", "UniRepLKNet-S", (3, 3, 27, 3), (96, 192, 384, 768),
                params_m=56, gmacs=9.1, source=_UNIREP_SRC),
)}  # fmt: skip

#: SW-T/S big kernels (Table 8); k = 3 in Table 8, 5 in the official throughput script.
SW_BIG_KERNELS = (51, 49, 47, 13)


def network_info(name: str) -> NetworkInfo:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {sorted(NETWORKS)}")
    return NETWORKS[name]


def build_network(
    name: str,
    impl: str = "auto",
    *,
    small_kernel: int | None = None,
    depths: Sequence[int] | None = None,
    dims: Sequence[int] | None = None,
    num_classes: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Network ``name`` (see ``NETWORKS``), random-initialised from ``seed`` (torch's global RNG is
    left as it was), in eval mode.

    ``impl`` picks the SW implementation of SW networks (a registered name, ``"reference"`` or
    ``"auto"``); for other networks it must be ``"auto"``/None. ``small_kernel`` overrides k (SW: 3,
    SLaK: 5); ``depths`` / ``dims`` override the stage sizes (reduced networks for tests; SLaK's
    width factor 1.3 applies to ``dims``). "_rep" networks come reparameterized and merged: SW's
    layers as their three depthwise convs (run in channels_last), SLaK's as one M x M kernel.
    """
    info = network_info(name)
    if info.family != "sw" and impl not in ("auto", None):
        raise ValueError(f"network {name!r} has no SW layers; impl must be 'auto' or None, got {impl!r}")
    depths = tuple(depths) if depths is not None else info.depths
    dims = tuple(dims) if dims is not None else info.dims
    if len(depths) != 4 or len(dims) != 4:
        raise ValueError(f"depths and dims must have 4 stages, got depths={depths}, dims={dims}")
    fork = torch.random.fork_rng(devices=[]) if True else contextlib.nullcontext()
    with fork, torch.device(device or "cpu"):
        torch.manual_seed(seed)
        if info.family == "sw":
            k = small_kernel or 3
            net = ShiftWiseNet(depths, dims, (*SW_BIG_KERNELS, k), impl="reference" if info.rep else (impl or "auto"),
                               num_classes=num_classes)  # fmt: skip
        elif info.family == "slak":
            net = SLaK(depths, dims, (51, 49, 47, 13, small_kernel or 5), num_classes=num_classes)
        else:
            kernels = UNIREP_T_KERNELS if depths[2] == 18 else UNIREP_S_KERNELS
            if tuple(depths) != info.depths:  # reduced: the pattern's first entries
                kernels = tuple(stage[:d] if d <= len(stage) else stage + stage[-1:] * (d - len(stage))
                                for stage, d in zip(kernels, depths))  # fmt: skip
            net = UniRepLKNet(depths, dims, kernels, num_classes=num_classes)
    if dtype is not None:
        net = net.to(dtype)
    net.eval()
    if info.rep:
        make_rep(net)
    net.network_name = name
    return net


@torch.no_grad()
def make_rep(net: nn.Module) -> nn.Module:
    """The deployed form of a network, in place: ``reparameterize()``; then every SW layer as its
    merged depthwise convs (run in channels_last) and every SLaK large kernel as one M x M conv."""
    net.reparameterize()
    merge_all(net)
    for module in net.modules():
        if isinstance(module, ReparamLargeKernelConv):
            module.merge_kernel()
    if any(isinstance(m, MergedShiftwiseConv2d) for m in net.modules()):
        net.memory_format = torch.channels_last
    return net


def sw_layers(net: nn.Module) -> list[nn.Module]:
    """The modules whose time is "the SW layers" (for a peer: its large-kernel layers)."""
    kinds: tuple[type, ...] = (ShiftwiseConv2d, MergedShiftwiseConv2d, ReparamLargeKernelConv, DilatedReparamBlock)
    found = [m for m in net.modules() if isinstance(m, kinds)]
    if not found:  # UniRepLKNet after reparameterize(): 3x3 blocks' dwconv is a plain conv
        found = [m.dwconv for m in net.modules() if isinstance(m, UniRepLKNetBlock)]
    else:
        found += [m.dwconv for m in net.modules() if isinstance(m, UniRepLKNetBlock) and isinstance(m.dwconv, nn.Conv2d)]
    return found


__all__ = ["NETWORKS", "NetworkInfo", "build_network", "make_rep", "network_info", "set_impl", "sw_layers"]
_ = Callable
