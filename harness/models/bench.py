"""The ``models`` benchmark suite: whole networks with each SW implementation plugged in.

``cases/models.toml`` lists ``[[model]]`` entries (network, batch, input size, tier);
``model_runs(...)`` expands them into one run per SW implementation for SW networks (an
implementation that cannot run here is a run with a ``skip`` reason) and one run for every other
network. ``prepare(run)`` builds the network (random init from the case's seed, norms and layer
scales randomised so that every path matters), reparameterizes it as the official throughput
script does, verifies it in float64 against the same network on the reference path, and returns
the call to time with the figures for ``benchmark.extra_info``.

Verification (``verify_network``), in float64 on one image (``VERIFY_SIZE``: 96 x 96):

- **per SW layer**, the rigorous check: every SW layer of the network under test is fed the input
  the reference-path network gave that layer, and its three branches must lie within
  ``harness.error_bound`` (the gamma_n bound of any summation order) of the reference's;
- **end to end**: the logits must agree within ``END_TO_END_RTOL * max|reference logits|``. The
  network around the SW layers is the same code on the same weights, so the two outputs differ
  only by rounding: the SW layers' own (each below n*u*|x|*|W| with n <= E*nk*k*k, u = 2**-53,
  ~1e-13 relative) and, for the merged form, that of the folded kernels, carried through up to
  36 blocks whose random weights amplify it. Measured on SW-tiny at 96x96: 3e-9 relative for the
  merged form, less for the implementations. A real fault (a wrong channel order, a missing
  branch or BN) changes the logits by O(1) relative (``tests/test_models.py`` flips the ghost
  order), so 1e-6 separates the two with two and six orders of magnitude to spare.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness import cases, eligibility
from harness.bench import Prepared, Selection
from harness.cases import ModelCase, Tier
from harness.eligibility import Purpose
from harness.models.layers import REFERENCE, ShiftwiseConv2d, available_implementations
from harness.models.networks import NETWORKS, build_network, make_rep, network_info, sw_layers
from harness.reference import error_bound, reference_forward
from harness.results import NetworkRow

#: End-to-end float64 tolerance relative to the reference logits' largest magnitude (see above).
END_TO_END_RTOL = 1e-6
#: Side of the image networks are verified on (float64). torch's CPU depthwise conv has no
#: oneDNN path in float64: one SW-tiny stage-1 layer at 224x224 takes 8.4 s through the
#: reference (0.19 s in float32), so a 224x224 check would take minutes per network. At 96x96
#: the stage maps are 24/12/6/3, smaller than every big kernel: on- and off-map slots, borders
#: and every branch are exercised. The layer benchmarks verify each implementation at the real
#: layer shapes.
VERIFY_SIZE = 96


class ModelMismatch(AssertionError):
    """A network with an implementation disagrees with the reference-path network."""


def load_model_cases(folder: str | os.PathLike | None = None, suites: list[str] | None = None,
                     measures: str | None = "inference") -> list[ModelCase]:  # fmt: skip
    """The networks of the suites (``harness.cases.load_model_cases``), their names checked here."""
    found = cases.load_model_cases(folder, suites, measures)
    for case in found:
        try:
            network_info(case.network)
        except ValueError as error:
            raise ValueError(f"model case {case.name!r}: {error}") from None
    return found


@dataclass(frozen=True)
class ModelRun:
    """One thing to time: a case, a device and (SW networks) an implementation."""

    case: ModelCase
    device: str
    implementation: str | None
    #: why it is not timed here (None: it is)
    skip: str | None = None

    @property
    def computation(self) -> str:
        return f"{self.case.network}[{self.implementation}]" if self.implementation else self.case.network

    @property
    def id(self) -> str:
        return f"{self.computation}-{self.device}-{self.case.name}"


def model_runs(suites: list[str] | None, tier: str, devices: tuple[str, ...], dtype: torch.dtype,
               purpose: Purpose = Purpose.NETWORK) -> list[ModelRun]:  # fmt: skip
    """Every run the selected suites ask for: SW networks once per registered implementation
    (inference suites for ``Purpose.NETWORK``, training suites for ``Purpose.TRAINING``)."""
    runs = []
    measures = "training" if purpose is Purpose.TRAINING else "inference"
    chosen = [c for c in load_model_cases(suites=suites, measures=measures) if Tier.parse(tier).includes(c.tier)]
    for device in devices:
        usable = available_implementations(device, dtype, purpose)
        for case in chosen:
            info = network_info(case.network)
            if info.family == "sw" and not info.rep:
                runs += [ModelRun(case, device, name, reason) for name, reason in sorted(usable.items())]
            else:
                runs.append(ModelRun(case, device, None, eligibility.reason(None, device, dtype, purpose)))
    return runs


# ----------------------------------------------------------------------------- building
@torch.no_grad()
def randomize_for_check(net: nn.Module, seed: int) -> nn.Module:
    """Give norms, layer scales and GRN non-trivial values (in place), so that every branch of
    every block contributes to the output: at initialisation BN is the identity, GRN is the
    identity and layer scales are 1e-6, which would hide a wrong SW layer from the logits."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.empty(t.shape, dtype=t.dtype).uniform_(low, high, generator=generator))

    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            uniform(module.running_mean, -0.1, 0.1)
            uniform(module.running_var, 0.5, 1.5)
            uniform(module.weight, 0.5, 1.5)
            uniform(module.bias, -0.1, 0.1)
        for name, param in module.named_parameters(recurse=False):
            if name == "gamma" and param.ndim == 1:  # layer scale
                uniform(param, 0.1, 0.3)
            elif name in ("gamma", "beta") and param.ndim == 4:  # GRN
                uniform(param, -0.2, 0.2)
    return net


def build_for_benchmark(case: ModelCase, implementation: str | None, device: str = "cpu") -> nn.Module:
    """The network timed for ``case``: built from the case's seed, randomised, then its deployed
    form (``reparameterize()``, and for "_rep" networks the merged kernels)."""
    info = network_info(case.network)
    base = case.network.removesuffix("_rep") if info.rep else case.network
    impl = implementation if info.family == "sw" and not info.rep else "auto"
    net = build_network(base, impl, small_kernel=case.small_kernel, seed=case.seed)
    randomize_for_check(net, case.seed)
    if info.rep:
        make_rep(net)
    else:
        net.reparameterize()
    return net.to(device=device, memory_format=getattr(net, "memory_format", torch.contiguous_format))


# ----------------------------------------------------------------------------- verification
def _sw_modules(net: nn.Module) -> list[ShiftwiseConv2d]:
    return [m for m in net.modules() if isinstance(m, ShiftwiseConv2d)]


@dataclass(frozen=True)
class ReferenceRecord:
    """What the reference-path network computed in float64 on one input: its logits and, per SW
    layer, the layer's SW input, its three branches and their error bounds."""

    x: torch.Tensor
    logits: torch.Tensor
    layers: tuple[tuple[torch.Tensor, tuple, tuple], ...]


@torch.no_grad()
def reference_record(reference: nn.Module, x: torch.Tensor) -> ReferenceRecord:
    """Run ``reference`` (a network on the reference path) in float64 on ``x`` and keep, per SW
    layer, its input, its branches and their ``error_bound``."""
    reference, x = reference.double(), x.double()
    captured: dict[int, torch.Tensor] = {}
    ref_layers = _sw_modules(reference)
    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: captured.__setitem__(i, args[0]))
             for i, m in enumerate(ref_layers)]  # fmt: skip
    try:
        logits = reference(x)
    finally:
        for hook in hooks:
            hook.remove()
    if not torch.isfinite(logits).all():
        raise ModelMismatch("the reference-path network's logits are not finite")
    layers = []
    for index, layer in enumerate(ref_layers):
        rep_in, weight = captured[index].index_select(1, layer.rep), layer.small_weight()
        want = tuple(reference_forward(rep_in, weight, layer.spec))
        layers.append((rep_in, want, tuple(error_bound(rep_in, weight, layer.spec, torch.float64))))
    return ReferenceRecord(x, logits, tuple(layers))


@torch.no_grad()
def verify_network(net: nn.Module, reference: nn.Module | ReferenceRecord, x: torch.Tensor | None = None) -> str:
    """Compare ``net`` with ``reference`` (the same weights on the reference path, or its
    ``reference_record``) in float64: each SW layer within ``error_bound``, the logits within
    ``END_TO_END_RTOL`` (module doc). Returns what was checked; raises ModelMismatch naming the
    first disagreement."""
    record = reference if isinstance(reference, ReferenceRecord) else reference_record(reference, x)
    net = net.double()
    layers = _sw_modules(net)
    if layers and len(record.layers) != len(layers):
        raise ModelMismatch(f"network has {len(layers)} SW layers, its reference {len(record.layers)}")
    for index, (layer, (rep_in, want, bound)) in enumerate(zip(layers, record.layers)):
        impl = layer.impl if layer.impl != "auto" else REFERENCE
        got = torch.ops.sw.shiftwise(rep_in, layer.small_weight(), layer.spec_key, impl)
        for branch, g, w, b in zip("hvi", got, want, bound):
            excess = (g - w).abs() - b
            if not bool((excess <= 0).all()):
                raise ModelMismatch(
                    f"SW layer {index} ({layer.extra_repr()}), branch {branch}: |got - reference| exceeds the "
                    f"float64 error bound by up to {excess.max().item():.3g} (max |reference| {w.abs().max().item():.3g})"
                )
    memory_format = getattr(net, "memory_format", torch.contiguous_format)
    got = net(record.x.contiguous(memory_format=memory_format))
    tolerance = END_TO_END_RTOL * record.logits.abs().max().item()
    error = (got - record.logits).abs().max().item()
    if not error <= tolerance:
        raise ModelMismatch(f"logits differ from the reference-path network's by {error:.3g} > tolerance {tolerance:.3g}")
    per_layer = f"{len(layers)} SW layers within the error bound" if layers else "merged form (no SW layers to check one by one)"
    return f"float64: {per_layer}, logits within {END_TO_END_RTOL:g} relative of the reference path (max diff {error:.2g})"


def _case_reference(case: ModelCase, device: str) -> ReferenceRecord:
    """The reference-path record of ``case``'s SW network (the unmerged network on the reference
    path, one image), shared by every implementation and by the "_rep" form: they all build the
    same weights from the case's seed (the batch does not enter)."""
    base = dataclasses.replace(case, name="reference", network=case.network.removesuffix("_rep"), batch=1, rounds=1,
                               compare_rounds=2, tier="check")  # fmt: skip
    return _reference_of(base, device)


@functools.lru_cache(maxsize=1)
def _reference_of(case: ModelCase, device: str) -> ReferenceRecord:
    reference = build_for_benchmark(case, REFERENCE, device).to(memory_format=torch.contiguous_format)
    return reference_record(reference, verification_input(case, device))


def verification_input(case: ModelCase, device: str) -> torch.Tensor:
    """One float64 image of at most ``VERIFY_SIZE`` x ``VERIFY_SIZE`` (see ``VERIFY_SIZE``)."""
    small = dataclasses.replace(case, height=min(case.height, VERIFY_SIZE), width=min(case.width, VERIFY_SIZE))
    return _input(small, 1, torch.float64, device, torch.contiguous_format)


# ----------------------------------------------------------------------------- figures
def count_flops(net: nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on ``shape`` (FlopCounterMode, on a meta copy: no compute)."""
    meta = copy.deepcopy(net).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    return int(counter.get_total_flops())


def sw_time_share(net: nn.Module, x: torch.Tensor) -> float:
    """Fraction of one forward pass spent in the SW layers (``networks.sw_layers``: a peer's
    large-kernel layers), timed with forward hooks (synchronized on a GPU)."""
    layers = sw_layers(net)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    spent, starts = [0.0], {}

    def before(module, args):
        sync()
        starts[id(module)] = time.perf_counter()

    def after(module, args, output):
        sync()
        spent[0] += time.perf_counter() - starts[id(module)]

    hooks = [h for m in layers for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        with torch.no_grad():
            sync()
            start = time.perf_counter()
            net(x)
            sync()
            total = time.perf_counter() - start
    finally:
        for hook in hooks:
            hook.remove()
    return spent[0] / total if total > 0 else float("nan")


def _input(case: ModelCase, batch: int, dtype: torch.dtype, device: str, memory_format) -> torch.Tensor:
    generator = torch.Generator().manual_seed(case.seed + 1)
    x = torch.randn(batch, 3, case.height, case.width, generator=generator, dtype=dtype)
    return x.to(device=device, memory_format=memory_format)


def prepare(run: ModelRun, dtype: torch.dtype = torch.float32) -> Prepared:
    """Build, verify (raises ModelMismatch) and make ready the timed call for ``run``: a
    ``harness.bench.Prepared`` whose row is a ``harness.results.NetworkRow``."""
    if run.skip:
        raise RuntimeError(f"{run.id} is not run here: {run.skip}")
    case, device = run.case, run.device
    info = network_info(case.network)
    net = build_for_benchmark(case, run.implementation, device)
    memory_format = getattr(net, "memory_format", torch.contiguous_format)
    if info.family == "sw":  # the merged form too, against the unmerged network on the reference path
        verified = verify_network(copy.deepcopy(net), _case_reference(case, device))
    else:
        verified = "no SW layers: a peer network, not compared"
    net = net.to(dtype)
    x = _input(case, case.batch, dtype, device, memory_format)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call() -> torch.Tensor:
        with torch.no_grad():
            out = net(x)
        sync()
        return out

    def verify(logits: object) -> str:
        """The timed network's logits (in ``dtype``): the float64 verification above compared the numbers."""
        if not isinstance(logits, torch.Tensor) or logits.shape != (case.batch, 1000) or not bool(torch.isfinite(logits).all()):
            raise ModelMismatch(f"{run.id}: the timed call's logits are not {case.batch} x 1000 finite numbers")
        return verified

    params = sum(p.numel() for p in net.parameters())
    flops = count_flops(net, tuple(x.shape))
    def row(verified: str) -> NetworkRow:
        """After the session's first (warm-up) call: the SW share of a warm network."""
        share = sw_time_share(net, x)
        return NetworkRow(
            computation=run.computation, network=case.network, implementation=run.implementation, label=info.label,
            device=device, case=case.name, suite=case.suite, batch=case.batch, height=case.height, width=case.width,
            small_kernel=case.small_kernel, flops=flops,
            compulsory_bytes=x.element_size() * (x.numel() + params + case.batch * 1000), params=params,
            sw_time_share=share, threads=torch.get_num_threads() if device == "cpu" else None,
            dtype=str(dtype).removeprefix("torch."),
            memory_format="channels_last" if memory_format == torch.channels_last else "contiguous", verified=verified,
        )  # fmt: skip

    return Prepared(call, verify, row, rounds=case.rounds)


@dataclass(frozen=True)
class NetworkItem:
    """A ``ModelRun`` as a benchmark item (``harness.bench.Item``)."""

    run: ModelRun
    kind = "network"

    @property
    def computation(self) -> str:
        return self.run.computation

    @property
    def device(self) -> str:
        return self.run.device

    @property
    def case_name(self) -> str:
        return self.run.case.name

    @property
    def suite(self) -> str:
        return self.run.case.suite

    @property
    def group(self) -> str:
        return f"{self.run.case.suite}/{self.run.case.name}"

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def skip(self) -> str | None:
        return self.run.skip

    def prepare(self, session) -> Prepared:
        return prepare(self.run, session.dtype)


def network_items(selection: Selection) -> list[NetworkItem]:
    """Every network run the selected suites and tier ask for, as benchmark items."""
    suites = list(selection.suites) if selection.suites else None
    if not load_model_cases(suites=suites):
        return []
    return [NetworkItem(run) for run in model_runs(suites, selection.tier, selection.devices, selection.dtype)]


__all__ = [
    "END_TO_END_RTOL", "ModelCase", "ModelMismatch", "ModelRun", "NetworkItem", "network_items", "build_for_benchmark", "count_flops",
    "ReferenceRecord", "load_model_cases", "model_runs", "prepare", "randomize_for_check",
    "reference_record", "sw_time_share",
    "verify_network", "NETWORKS",
]  # fmt: skip
