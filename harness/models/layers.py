"""The SW layer as a PyTorch module, and the SW operator as a ``torch.library`` custom op.

``ShiftwiseConv2d`` is compatible with the official block's SW layer (``ShifthWiseConv2dImplicit``
in lidc54/shift-wiseConv, ``backbones/SW_v2_unirep.py``): the same parameter names (``LoRAs``,
``LoRA``, ``bn_lora1``, ``bn_lora2``, ``bn_small``), the same ghost channels, the same tables
and the same output channel order, so an official state dict loads into it. The shift-and-add
runs through any registered implementation (``impl=``), by way of the custom op
``torch.ops.sw.shiftwise``, which has a fake (meta) kernel and a FLOP formula so that
``torch.compile`` and ``FlopCounterMode`` see through a network that contains it.

The op takes the spec by key: ``register_spec(spec)`` returns the key (a digest of the spec's
tables) and keeps the spec in a process-wide table that starts empty. A custom op's schema
cannot carry a Python object, and passing the tables as tensors would cost a host copy and a
validation per call.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.flop_counter
from torch import nn

from harness import eligibility
from harness.eligibility import Purpose
from harness.reference import Branches, merge_kernels, reference_forward
from harness.registry import DEFAULT_IMPLS_DIR, IMPLS_ENV, Implementation, generation, implementations
from harness.spec import ShiftwiseSpec

#: Implementation name that runs the reference (the three rep-merged depthwise convs).
REFERENCE = "reference"
#: Official ghost-channel seed (``np.random.seed(123)`` before ``np.random.choice``).
GHOST_SEED = 123

_SPECS: dict[str, ShiftwiseSpec] = {}


def register_spec(spec: ShiftwiseSpec) -> str:
    """The key under which the custom op finds ``spec`` (registered if new)."""
    if not isinstance(spec, ShiftwiseSpec):
        raise TypeError(f"register_spec expects a ShiftwiseSpec, got {type(spec).__name__}")
    key = hashlib.sha1(repr(spec._key()).encode()).hexdigest()[:20]
    _SPECS.setdefault(key, spec)
    return key


def registered_spec(key: str) -> ShiftwiseSpec:
    try:
        return _SPECS[key]
    except KeyError:
        raise KeyError(f"no ShiftwiseSpec registered under key {key!r} (register_spec(spec) gives the key)") from None


def _implementation(name: str) -> Implementation:
    return _implementation_in(name, os.environ.get(IMPLS_ENV), generation())


@functools.lru_cache(maxsize=64)
def _implementation_in(name: str, folder: str | None, generation_: int) -> Implementation:
    """The record named ``name`` (cached on the folder and its discovery generation)."""
    found = implementations()
    if name not in found:
        raise ValueError(f"unknown SW implementation {name!r}; known: {sorted(found)} (or 'reference', 'auto')")
    return found[name]


def available_implementations(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                              purpose: Purpose = Purpose.NETWORK) -> dict[str, str | None]:  # fmt: skip
    """Every registered implementation -> None if it can run a network on ``device`` in
    ``dtype`` here, else the reason it cannot (unavailable, emulated GPU code, dtype)."""
    return {name: eligibility.reason(impl, device, dtype, purpose) for name, impl in implementations().items()}


def resolve_impl(impl: str, device: str | torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The implementation ``impl`` names on ``device``: itself (checked), or for ``"auto"`` the
    highest-ranked (``Implementation.rank``, ties by name) that runs natively there in
    ``dtype``, else the reference. Resolved once per (device, dtype, implementations folder,
    ``harness.registry.generation``): again only when a discovery finds a changed set."""
    if impl == REFERENCE:
        return impl
    device = torch.device(device)
    resolved = _RESOLVED.get(_registry_key(impl, device, dtype))
    if resolved is None:
        resolved = _resolve(impl, device, dtype)
        _RESOLVED[_registry_key(impl, device, dtype)] = resolved  # after: a first discovery changes the generation
    return resolved


def _registry_key(impl: str, device: torch.device, dtype: torch.dtype) -> tuple:
    """What an answer derived from the registry for (impl, device, dtype) depends on: the
    implementations folder and its discovery generation (``resolve_impl``'s cache key)."""
    folder = os.environ.get(IMPLS_ENV)  # read once: a lookup of an unset variable costs ~2 us
    return impl, device, dtype, folder, generation(folder or DEFAULT_IMPLS_DIR)


#: resolve_impl's answers, keyed on everything they depend on
_RESOLVED: dict[tuple, str] = {}


def _resolve(impl: str, device: torch.device, dtype: torch.dtype) -> str:
    usable = available_implementations(device, dtype)
    if impl == "auto":
        records = implementations()
        ranked = sorted((n for n, reason in usable.items() if reason is None), key=lambda n: (-records[n].rank, n))
        return (ranked + [REFERENCE])[0]
    if impl not in usable:
        raise ValueError(f"unknown SW implementation {impl!r}; known: {sorted(usable)} (or 'reference', 'auto')")
    if usable[impl] is not None:
        raise RuntimeError(f"SW implementation {impl!r} cannot run on {device} in {dtype}: {usable[impl]}")
    return impl


@torch.compiler.assume_constant_result
def _resolved_in_forward(impl: str, device: torch.device, dtype: torch.dtype) -> str:
    """``resolve_impl`` for the layer's forward (a constant to ``torch.compile``: the registry's
    file checks are not traced)."""
    return resolve_impl(impl, device, dtype)


@torch.compiler.assume_constant_result
def _has_deployed(impl: str) -> bool:
    """Whether implementation ``impl`` declares a deployed layer (a constant to ``torch.compile``)."""
    return _implementation(impl).deployed is not None


# ----------------------------------------------------------------------------- the custom op
@torch.library.custom_op("sw::shiftwise", mutates_args=())
def shiftwise(x: torch.Tensor, weight: torch.Tensor, spec_key: str, impl: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SW operator's (h, v, i) for ``x`` (B, C, H, W) and ``weight`` (C*nk, 1, k, k), by
    implementation ``impl`` (a registered name or ``"reference"``)."""
    spec = registered_spec(spec_key)
    if impl == REFERENCE:
        h, v, i = reference_forward(x, weight, spec)
    else:
        h, v, i = _implementation(impl)(x.contiguous(), weight.contiguous(), spec)
    # A custom op's outputs may not alias its inputs or each other.
    return tuple(t if t.is_contiguous() else t.contiguous() for t in (h, v, i))  # type: ignore[return-value]


@shiftwise.register_fake
def _shiftwise_fake(x, weight, spec_key, impl):
    spec = registered_spec(spec_key)
    torch._check(x.shape[1] == spec.channels, lambda: f"x must have {spec.channels} channels, got {x.shape[1]}")
    torch._check(tuple(weight.shape) == spec.weight_shape, lambda: f"weight must be {spec.weight_shape}")
    return x.new_empty(x.shape), x.new_empty(x.shape), x.new_empty(x.shape)


def _shiftwise_setup(ctx, inputs, output) -> None:
    x, weight, spec_key, impl = inputs
    ctx.save_for_backward(x, weight)
    ctx.spec_key, ctx.impl = spec_key, impl


def backward_used(impl: str) -> str:
    """Whose backward the custom op runs for implementation ``impl``: ``impl`` itself when it
    declares one (``Implementation.backward``), else ``"reference"``."""
    if impl == REFERENCE or _implementation(impl).backward is None:
        return REFERENCE
    return impl


def _shiftwise_backward(ctx, grad_h, grad_v, grad_i):
    """The implementation's declared backward (``Implementation.run_backward``) when it has
    one, else the reference's (autograd of the merged depthwise convs; the op is linear in x
    and in weight)."""
    x, weight = ctx.saved_tensors
    spec = registered_spec(ctx.spec_key)
    grads = [torch.zeros_like(x) if g is None else g.contiguous() for g in (grad_h, grad_v, grad_i)]
    if backward_used(ctx.impl) != REFERENCE:
        gx, gw = _implementation(ctx.impl).run_backward(x.contiguous(), weight.contiguous(), spec, Branches(*grads))
        return gx, gw, None, None
    with torch.enable_grad():
        xx, ww = x.detach().requires_grad_(), weight.detach().requires_grad_()
        gx, gw = torch.autograd.grad(reference_forward(xx, ww, spec), (xx, ww), grads)
    return gx, gw, None, None


shiftwise.register_autograd(_shiftwise_backward, setup_context=_shiftwise_setup)


@torch.utils.flop_counter.register_flop_formula(torch.ops.sw.shiftwise)
def _shiftwise_flops(x_shape, weight_shape, spec_key, impl, *args, out_shape=None, **kwargs) -> int:
    """The operator's useful FLOPs (``harness.perf.useful_flops``: the small conv of active
    kernels and one addition per in-map move), the same for every implementation."""
    from harness.perf import useful_flops

    return useful_flops(registered_spec(spec_key), tuple(x_shape))


@torch.library.custom_op("sw::deployed", mutates_args=())
def deployed_layer(x: torch.Tensor, weight: torch.Tensor, branch_scale: torch.Tensor, branch_bias: torch.Tensor,
                   out_scale: torch.Tensor, out_shift: torch.Tensor, rep: torch.Tensor, ghost: torch.Tensor,
                   spec_key: str, impl: str) -> torch.Tensor:  # fmt: skip
    """A reparameterized SW layer and the BatchNorm after it in one call, by implementation
    ``impl``'s ``deployed`` (``ShiftwiseConv2d.forward`` says what it computes)."""
    return _run_deployed(x, weight, branch_scale, branch_bias, out_scale, out_shift, rep, ghost, spec_key, impl)


def _run_deployed(x: torch.Tensor, weight: torch.Tensor, branch_scale: torch.Tensor, branch_bias: torch.Tensor,
                  out_scale: torch.Tensor, out_shift: torch.Tensor, rep: torch.Tensor, ghost: torch.Tensor,
                  spec_key: str, impl: str) -> torch.Tensor:  # fmt: skip
    """``sw::deployed``'s body: the implementation's ``deployed``, its result checked."""
    out = _implementation(impl).deployed(x, weight, registered_spec(spec_key), branch_scale, branch_bias, out_scale,
                                         out_shift, rep, ghost)  # fmt: skip
    return _checked_deployed_output(out, x, impl)


def _checked_deployed_output(out: object, x: torch.Tensor, impl: str) -> torch.Tensor:
    """``out`` if it is what a deployed layer must return for ``x`` (its shape, dtype, device)."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        got = f"{tuple(out.shape)} {out.dtype} on {out.device}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"implementation {impl}: deployed must return {tuple(x.shape)} {x.dtype} on {x.device}, got {got}")
    return out


def _eager_deployed(impl: str, device: torch.device, dtype: torch.dtype) -> tuple[str, Callable] | None:
    """(name, deployed function) of the implementation a reparameterized layer set to ``impl``
    uses on (device, dtype), or None where it has no deployed layer (or is the reference):
    ``"auto"``'s ``resolve_impl`` and the record lookup in one, for plain eager calls (a named
    implementation is called as named, as on the traced path, even where ``"auto"`` would pass
    it over: emulated GPU code on the CPU, an undeclared dtype). Cached on what both depend on
    (``resolve_impl``'s key)."""
    try:
        return _EAGER_DEPLOYED[_registry_key(impl, device, dtype)]
    except KeyError:
        pass
    name = resolve_impl(impl, device, dtype) if impl == "auto" else impl  # a named one is used as named
    deployed = None if name == REFERENCE else _implementation(name).deployed
    found = None if deployed is None else (name, deployed)
    _EAGER_DEPLOYED[_registry_key(impl, device, dtype)] = found  # after, as in resolve_impl
    return found


#: _eager_deployed's answers, keyed as resolve_impl's
_EAGER_DEPLOYED: dict[tuple, tuple[str, Callable] | None] = {}


def _plain_eager(x: torch.Tensor) -> bool:
    """Whether nothing that must see the custom op is active: no ``torch.compile`` or export
    tracing, no dispatch mode (``FlopCounterMode``, ``make_fx``), no profiler, a plain tensor
    with data. Then the layer calls the implementation's ``deployed`` directly: the dispatcher's
    trip through a Python custom op costs ~25-55 us a call on this CPU, a third to half of what
    numba_cpu's deployed layer takes for a whole 7x7 stage-4 layer, and every Python step of a
    layer call costs several times more inside a network, where it runs cold, than back to back
    (``reports/notes/cold_layer_calls.py``)."""
    return (type(x) is torch.Tensor and not x.is_meta and not torch.compiler.is_compiling()
            and not torch.autograd.profiler._is_profiler_enabled
            and torch._C._len_torch_dispatch_stack() == 0)  # fmt: skip


@deployed_layer.register_fake
def _deployed_fake(x, weight, branch_scale, branch_bias, out_scale, out_shift, rep, ghost, spec_key, impl):
    return torch.empty_like(x, memory_format=torch.channels_last)


@torch.utils.flop_counter.register_flop_formula(torch.ops.sw.deployed)
def _deployed_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """The operator's useful FLOPs on the rep channels (the folded scales are not counted)."""
    from harness.perf import useful_flops

    spec = registered_spec(args[-2])
    return useful_flops(spec, (x_shape[0], spec.channels, *x_shape[2:]))


# ----------------------------------------------------------------------------- channel split
def ghost_split(in_channels: int, ghost_ratio: float) -> tuple[list[int], list[int]]:
    """(rep, ghost) channel indices as the official layer picks them, both sorted.

    ``repN = int(C * (1 - ghost_ratio)) // 2 * 2`` channels go through SW; the official code
    calls ``np.random.seed(123)`` then ``np.random.choice(C, C - repN, replace=False)`` for the
    ghost channels. ``np.random.RandomState(123)`` is the generator that call seeds, so this
    gives the same choice without touching numpy's global state.
    """
    if not isinstance(in_channels, int) or in_channels < 2:
        raise ValueError(f"in_channels must be an int >= 2, got {in_channels!r}")
    if not 0.0 <= ghost_ratio < 1.0:
        raise ValueError(f"ghost_ratio must be in [0, 1), got {ghost_ratio}")
    rep_n = int(in_channels * (1 - ghost_ratio)) // 2 * 2
    if rep_n == 0:
        raise ValueError(f"no channel left for SW: in_channels={in_channels}, ghost_ratio={ghost_ratio}")
    ghost = sorted(np.random.RandomState(GHOST_SEED).choice(in_channels, in_channels - rep_n, replace=False).tolist())
    rep = sorted(set(range(in_channels)) - set(ghost))
    return rep, ghost


@functools.lru_cache(maxsize=64)
def official_spec(big_kernel: int, small_kernel: int, channels: int, groups: int) -> ShiftwiseSpec:
    """``ShiftwiseSpec.official`` (cached: every official layer of a shape draws the same tables,
    since the official ``AddShift_mp_module`` calls ``torch.manual_seed(123)`` in each layer)."""
    with torch.device("cpu"):  # the tables are host data, whatever device the module is built on
        return ShiftwiseSpec.official(big_kernel=big_kernel, small_kernel=small_kernel, channels=channels, groups=groups)


def _fold_bn(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode BatchNorm: y = scale * x + shift."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _check_official_arguments(in_channels, out_channels, big_kernel, stride, group, use_small_conv, bias) -> None:
    """One-line errors for the official constructor's arguments this layer cannot honour."""
    if big_kernel is None:
        raise TypeError(
            "ShiftwiseConv2d() missing big_kernel: call it as the official layer, (in_channels, out_channels, "
            "big_kernel, small_kernel, ...), or with big_kernel=..."
        )
    if out_channels is not None and out_channels != in_channels:
        raise ValueError(
            f"out_channels must equal in_channels ({in_channels}): the SW layer is depthwise, got {out_channels} "
            "(an old-style call ShiftwiseConv2d(C, big_kernel, small_kernel) now reads big_kernel as out_channels)"
        )
    if stride != 1:
        raise ValueError(f"stride must be 1 (the SW shifts assume stride 1, as the official layer's do), got {stride}")
    if group not in (1, in_channels):
        raise ValueError(f"group must be 1 or in_channels ({in_channels}): the SW layer is depthwise, got {group}")
    if not use_small_conv:
        raise ValueError(
            "use_small_conv=False is not supported: the small-kernel branch is part of the SW operator "
            "(the official layer ignores the flag)"
        )
    if bias:
        raise ValueError(
            "bias=True is not supported: the SW layer has no bias (the official layer ignores the flag and builds none)"
        )


class ShiftwiseConv2d(nn.Module):
    """The SW layer: ghost split, small grouped conv(s), shift-and-add, per-branch BN, identity.

    ``forward(x)`` for x (B, C, H, W) returns (B, C, H, W): the ``repN`` SW channels
    ``bn_lora1(h) + bn_lora2(v) + bn_small(i) + x_rep`` first, then the ghost channels as they
    came (the official ``torch.cat([x, ghost_inputs], dim=1)`` order). The ``N_path`` small
    convs ``Conv2d(repN, repN*nk, k, padding=k-1, groups=repN)`` are merged by summing their
    weights (equal to summing their outputs, the official forward, up to rounding).

    ``impl``: a registered implementation's name, ``"reference"`` (the merged depthwise convs),
    or ``"auto"`` (``resolve_impl``: the best-ranked for the input's device and dtype, cached).

    The constructor is the official one, positionally and by keyword: ``(in_channels,
    out_channels, big_kernel, small_kernel=3, stride=1, group=1, bn=True, use_small_conv=True,
    ghost_ratio=0.23, N_path=2, N_rep=4, bias=False)``, then ``impl`` and ``spec`` by keyword.
    ``out_channels`` may be left out (the layer keeps its channels) and must otherwise equal
    ``in_channels``; ``ShiftwiseConv2d(C, big_kernel=M, small_kernel=k, ...)`` is the same call.
    What the official layer accepts but ignores or gets wrong is refused with a one-line error:
    ``stride`` other than 1 (its shifts assume stride 1), ``out_channels`` other than
    ``in_channels`` (it outputs ``in_channels`` anyway), ``bias=True`` and
    ``use_small_conv=False`` (it never builds a bias or drops the small kernel). ``group`` is
    the group count of the convolution the layer stands in for (the official block passes
    ``group=dim``); it changes nothing, as in the official layer, and must be 1 or ``in_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        big_kernel: int | None = None,
        small_kernel: int = 3,
        stride: int = 1,
        group: int = 1,
        bn: bool = True,
        use_small_conv: bool = True,
        ghost_ratio: float = 0.23,
        N_path: int = 2,
        N_rep: int = 4,
        bias: bool = False,
        *,
        impl: str = "auto",
        spec: ShiftwiseSpec | None = None,
    ) -> None:
        _check_official_arguments(in_channels, out_channels, big_kernel, stride, group, use_small_conv, bias)
        super().__init__()
        rep, ghost = ghost_split(in_channels, ghost_ratio)
        rep_n = len(rep)
        if N_path < 1:
            raise ValueError(f"N_path must be >= 1, got {N_path}")
        if spec is None:
            spec = official_spec(big_kernel, small_kernel, rep_n, N_rep)
        if (spec.channels, spec.big_kernel, spec.small_kernel) != (rep_n, big_kernel, small_kernel):
            raise ValueError(
                f"spec must have channels={rep_n} (repN), big_kernel={big_kernel}, small_kernel={small_kernel}; got {spec!r}"
            )
        if not isinstance(impl, str):
            raise TypeError(f"impl must be a str, got {type(impl).__name__}")
        if impl not in ("auto", REFERENCE):
            _implementation(impl)  # an unknown name fails here, not at the first forward
        self.in_channels, self.rep_n = in_channels, rep_n
        self.kernels = (small_kernel, big_kernel)
        self.nk = spec.nk
        self.spec = spec
        self.spec_key = register_spec(spec)
        self.impl = impl
        self.register_buffer("rep", torch.tensor(rep, dtype=torch.long), persistent=False)
        self.register_buffer("ghost", torch.tensor(ghost, dtype=torch.long), persistent=False)
        self.LoRA: nn.Conv2d | None = None
        self.LoRAs = nn.ModuleList(
            nn.Conv2d(rep_n, rep_n * spec.nk, small_kernel, padding=small_kernel - 1, groups=rep_n, bias=False)
            for _ in range(N_path)
        )
        self.use_bn = bn
        self.bn_lora1 = nn.BatchNorm2d(rep_n) if bn else None
        self.bn_lora2 = nn.BatchNorm2d(rep_n) if bn else None
        self.bn_small = nn.BatchNorm2d(rep_n) if bn else None
        self.register_buffer("branch_scale", None)  # set by reparameterize(): (3, repN)
        self.register_buffer("branch_bias", None)  # (repN,)
        self.register_buffer("output_scale", None)  # set by fold_following_bn(): (C,)
        self.register_buffer("output_shift", None)  # (C,)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, kernels={self.kernels}, repN={self.rep_n}, groups={self.spec.groups}, impl={self.impl!r}"

    @property
    def reparameterized(self) -> bool:
        return self.branch_scale is not None

    def small_weight(self) -> torch.Tensor:
        """The small kernels (repN*nk, 1, k, k): the merged conv's, or the N_path convs' sum."""
        if self.LoRA is not None:
            return self.LoRA.weight
        weight = self.LoRAs[0].weight
        for conv in self.LoRAs[1:]:
            weight = weight + conv.weight
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ShiftwiseConv2d: x must be (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        deployable = self.reparameterized and not (torch.is_grad_enabled() and x.requires_grad)
        if deployable and _plain_eager(x):
            found = _eager_deployed(self.impl, x.device, x.dtype)
            if found is not None:
                return self._deployed_eager(x, *found)
        impl = _resolved_in_forward(self.impl, x.device, x.dtype) if self.impl == "auto" else self.impl
        if deployable and impl != REFERENCE:
            if _has_deployed(impl):
                return self._deployed(x, impl)
        ghost_in = x.index_select(1, self.ghost)
        rep_in = x.index_select(1, self.rep)
        h, v, i = torch.ops.sw.shiftwise(rep_in, self.small_weight(), self.spec_key, impl)
        if self.branch_scale is not None:
            s = self.branch_scale.view(3, 1, -1, 1, 1)
            out = h * s[0] + v * s[1] + i * s[2] + self.branch_bias.view(1, -1, 1, 1)
        elif self.use_bn:
            out = self.bn_lora1(h) + self.bn_lora2(v) + self.bn_small(i)
        else:
            out = h + v + i
        out = torch.cat([out + rep_in, ghost_in], dim=1)
        if self.output_scale is not None:
            out = out * self.output_scale.view(1, -1, 1, 1) + self.output_shift.view(1, -1, 1, 1)
        return out

    def _deployed(self, x: torch.Tensor, impl: str) -> torch.Tensor:
        """The whole reparameterized layer (and a folded BatchNorm after it) in one call of the
        implementation's ``deployed`` through ``sw::deployed`` (what tracing, dispatch modes and
        profilers see): reads x once, writes the output once."""
        scale, shift = self._output_affine(x)
        return torch.ops.sw.deployed(x, self.LoRA.weight, self.branch_scale, self.branch_bias, scale, shift, self.rep,
                                     self.ghost, self.spec_key, impl)  # fmt: skip

    def _deployed_eager(self, x: torch.Tensor, impl: str, deployed: Callable) -> torch.Tensor:
        """``_deployed`` in plain eager inference: implementation ``impl``'s ``deployed`` called
        directly, its result checked as the op checks it (``_plain_eager`` says why)."""
        scale, shift = self._output_affine(x)
        out = deployed(x, self.LoRA.weight, registered_spec(self.spec_key), self.branch_scale, self.branch_bias, scale,
                       shift, self.rep, self.ghost)  # fmt: skip
        return _checked_deployed_output(out, x, impl)

    def _output_affine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded BatchNorm's (scale, shift), or (1, 0) when none was folded."""
        if self.output_scale is None:
            return x.new_ones(self.in_channels), x.new_zeros(self.in_channels)
        return self.output_scale, self.output_shift

    @torch.no_grad()
    def fold_following_bn(self, bn: nn.BatchNorm2d) -> None:
        """Fold an eval-mode BatchNorm applied to this layer's output (the block's ``norm``)
        into the layer: afterwards the layer returns ``bn(layer(x))`` and ``bn`` can go."""
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None or bn.num_features != self.in_channels:
            raise ValueError(f"expected a BatchNorm2d({self.in_channels}) with running statistics, got {bn!r}")
        scale = bn.running_var.new_ones(self.in_channels) if bn.weight is None else bn.weight
        shift = bn.running_var.new_zeros(self.in_channels) if bn.bias is None else bn.bias
        scale = scale / torch.sqrt(bn.running_var + bn.eps)
        shift = shift - bn.running_mean * scale
        if self.output_scale is not None:  # a second fold composes with the first
            scale, shift = self.output_scale * scale, self.output_shift * scale + shift
        self.output_scale, self.output_shift = scale.detach().clone(), shift.detach().clone()

    @torch.no_grad()
    def merge_branches(self) -> None:
        """The official ``merge_branches``: the N_path small convs become one (``LoRA``)."""
        if self.LoRA is not None:
            return
        first = self.LoRAs[0]
        merged = nn.Conv2d(first.in_channels, first.out_channels, first.kernel_size, padding=first.padding,
                           groups=first.groups, bias=False).to(first.weight)  # fmt: skip
        merged.weight.copy_(self.small_weight())
        self.LoRA = merged
        del self.LoRAs

    @torch.no_grad()
    def reparameterize(self) -> None:
        """For inference: merge the N_path convs and fold each branch's BatchNorm (running
        statistics) into one per-channel scale per branch (``branch_scale``, (3, repN)) and one
        bias (``branch_bias``). Idempotent."""
        self.merge_branches()
        if self.reparameterized:
            return
        weight = self.LoRA.weight
        if self.use_bn:
            folded = [_fold_bn(bn) for bn in (self.bn_lora1, self.bn_lora2, self.bn_small)]
            scale = torch.stack([s for s, _ in folded])
            bias = sum(b for _, b in folded)
        else:
            scale = weight.new_ones(3, self.rep_n)
            bias = weight.new_zeros(self.rep_n)
        self.branch_scale = scale.detach().clone()
        self.branch_bias = bias.detach().clone()
        self.bn_lora1 = self.bn_lora2 = self.bn_small = None
        self.use_bn = False

    @torch.no_grad()
    def to_merged(self) -> MergedShiftwiseConv2d:
        """The whole layer as rep-merged depthwise convs (the reference form), for inference.

        The three branch kernels (``harness.merge_kernels``) get the branch scales folded in,
        the identity residual becomes +1 at the identity kernel's centre, and the strips are
        zero-padded to centred k x (2R+1) kernels (R = max(M//2, nk*k-1-M//2)) so that one
        ``conv2d(padding=...)`` applies each. Equal to this module in eval mode up to rounding.
        """
        if self.reparameterized:
            scale, bias = self.branch_scale, self.branch_bias
        elif self.use_bn:
            folded = [_fold_bn(bn) for bn in (self.bn_lora1, self.bn_lora2, self.bn_small)]
            scale, bias = torch.stack([s for s, _ in folded]), sum(b for _, b in folded)
        else:
            weight = self.small_weight()
            scale, bias = weight.new_ones(3, self.rep_n), weight.new_zeros(self.rep_n)
        spec = self.spec
        kernels = merge_kernels(self.small_weight().detach(), spec)
        half, extent, k = spec.big_kernel // 2, spec.nk * spec.small_kernel, spec.small_kernel
        radius = max(half, extent - 1 - half)
        h = kernels.h.new_zeros(self.rep_n, 1, k, 2 * radius + 1)
        v = kernels.v.new_zeros(self.rep_n, 1, 2 * radius + 1, k)
        h[..., radius - half : radius - half + extent] = kernels.h
        v[..., radius - half : radius - half + extent, :] = kernels.v
        i = kernels.i.clone()
        h, v, i = (kern * s.view(-1, 1, 1, 1) for kern, s in zip((h, v, i), scale))
        i[:, 0, k // 2, k // 2] += 1.0  # the identity residual
        ghost_affine = None
        if self.output_scale is not None:  # a folded BatchNorm after the layer
            a, b = self.output_scale[: self.rep_n], self.output_shift[: self.rep_n]
            h, v, i = (kern * a.view(-1, 1, 1, 1) for kern in (h, v, i))
            bias = a * bias + b
            ghost_affine = (self.output_scale[self.rep_n :].clone(), self.output_shift[self.rep_n :].clone())
        return MergedShiftwiseConv2d(self.rep.clone(), self.ghost.clone(), h, v, i, bias.detach().clone(), radius,
                                     ghost_affine=ghost_affine)  # fmt: skip


class MergedShiftwiseConv2d(nn.Module):
    """A ``ShiftwiseConv2d`` exported as three depthwise convs plus a bias on the SW channels,
    then the ghost channels concatenated in the official order (``ShiftwiseConv2d.to_merged``),
    scaled and shifted per channel when a following BatchNorm was folded in (``ghost_affine``)."""

    def __init__(self, rep: torch.Tensor, ghost: torch.Tensor, h: torch.Tensor, v: torch.Tensor,
                 i: torch.Tensor, bias: torch.Tensor, radius: int,
                 ghost_affine: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.in_channels = rep.numel() + ghost.numel()
        scale, shift = ghost_affine if ghost_affine is not None else (None, None)
        self.register_buffer("ghost_scale", scale)
        self.register_buffer("ghost_shift", shift)
        self.register_buffer("rep", rep, persistent=False)
        self.register_buffer("ghost", ghost, persistent=False)
        self.weight_h = nn.Parameter(h, requires_grad=False)
        self.weight_v = nn.Parameter(v, requires_grad=False)
        self.weight_i = nn.Parameter(i, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.radius = radius
        self.r = i.shape[-1] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ShiftwiseConv2d: x must be (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        ghost_in = x.index_select(1, self.ghost)
        rep_in = x.index_select(1, self.rep)
        c, r, radius = rep_in.shape[1], self.r, self.radius
        out = F.conv2d(rep_in, self.weight_h, self.bias, padding=(r, radius), groups=c)
        out = out + F.conv2d(rep_in, self.weight_v, padding=(radius, r), groups=c)
        out = out + F.conv2d(rep_in, self.weight_i, padding=r, groups=c)
        if self.ghost_scale is not None:
            ghost_in = ghost_in * self.ghost_scale.view(1, -1, 1, 1) + self.ghost_shift.view(1, -1, 1, 1)
        return torch.cat([out, ghost_in], dim=1)


def merge_all(model: nn.Module) -> nn.Module:
    """Replace every ``ShiftwiseConv2d`` in ``model`` by its ``to_merged()`` form (in place)."""
    for name, child in list(model.named_children()):
        if isinstance(child, ShiftwiseConv2d):
            setattr(model, name, child.to_merged())
        else:
            merge_all(child)
    return model


def set_impl(model: nn.Module, impl: str) -> nn.Module:
    """Point every ``ShiftwiseConv2d`` in ``model`` at implementation ``impl`` (in place)."""
    if impl not in ("auto", REFERENCE):
        _implementation(impl)  # a clear error for an unknown name
    for module in model.modules():
        if isinstance(module, ShiftwiseConv2d):
            module.impl = impl
    return model


__all__ = [
    "REFERENCE", "MergedShiftwiseConv2d", "ShiftwiseConv2d", "available_implementations", "backward_used",
    "ghost_split", "merge_all", "register_spec", "registered_spec", "resolve_impl", "set_impl", "shiftwise",
]  # fmt: skip
