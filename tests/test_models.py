"""ShiftwiseConv2d, the custom op, the networks and the model suite (fast: reduced networks,
small maps, float64)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness import error_bound, reference_forward
from harness.cases import load_cases
from harness.models import ShiftwiseConv2d, build_network, set_impl
from harness.models.bench import (
    END_TO_END_RTOL, ModelMismatch, load_model_cases, model_runs, randomize_for_check, verify_network,
)  # fmt: skip
from harness.models.layers import available_implementations, ghost_split, resolve_impl
from harness.models.networks import NETWORKS, make_rep
from harness.models.table7 import PAPER_A100, table7_section
from harness.perf import useful_flops

U64 = torch.finfo(torch.float64).eps / 2
CPU_IMPLS = sorted(name for name, reason in available_implementations("cpu", torch.float64).items() if reason is None)
#: reduced SW-tiny: one block per stage, SW-tiny's widths (so its real layer shapes), 64x64 input
REDUCED = dict(depths=(1, 1, 1, 1))


def _randomized_layer(channels=20, big=13, small=3, seed=0, **kwargs) -> ShiftwiseConv2d:
    torch.manual_seed(seed)
    layer = ShiftwiseConv2d(channels, big_kernel=big, small_kernel=small, impl="reference", **kwargs).double().eval()
    randomize_for_check(layer, seed)
    return layer


def _within(got: torch.Tensor, want: torch.Tensor, rtol: float, what: str) -> None:
    error, scale = (got - want).abs().max().item(), want.abs().max().item()
    assert error <= rtol * scale, f"{what}: max |diff| {error:.3g} > {rtol:g} * max |expected| {scale:.3g}"


# ----------------------------------------------------------------------------- the layer
def test_ghost_split_is_the_official_choice():
    """np.random.seed(123); np.random.choice(C, C - repN, replace=False), sorted, as the official
    layer (the global state is saved and restored around the replay)."""
    saved = np.random.get_state()
    try:
        for channels, rep_n in ((80, 60), (160, 122), (320, 246), (640, 492)):
            np.random.seed(123)
            ghost = sorted(np.random.choice(channels, channels - rep_n, replace=False).tolist())
            rep, got = ghost_split(channels, 0.23)
            assert (len(rep), got) == (rep_n, ghost)
            assert sorted(rep + got) == list(range(channels))
    finally:
        np.random.set_state(saved)


def test_layer_is_the_official_forward():
    """Literally the official forward: N_path convs summed, the shift-add of that sum (here the
    harness's torch_roll port of the official slice-and-add), BN per branch, + x_rep, then the
    ghost channels after the SW channels."""
    from harness import implementations

    layer = _randomized_layer(N_path=2)
    x = torch.randn(2, 20, 9, 11, dtype=torch.float64)
    rep_in, ghost_in = x[:, layer.rep], x[:, layer.ghost]
    y = sum(conv(rep_in) for conv in layer.LoRAs)
    h, v, i = implementations()["torch_roll"].fn(y, layer.spec)
    expected = torch.cat([layer.bn_lora1(h) + layer.bn_lora2(v) + layer.bn_small(i) + rep_in, ghost_in], dim=1)
    _within(layer(x), expected, 64 * layer.spec.groups * layer.nk * 9 * U64, "module vs official forward")


def _layer_tolerance(layer: ShiftwiseConv2d, x: torch.Tensor) -> torch.Tensor:
    """Per element: each branch's error bound scaled by its BN scale (twice: both sides round),
    plus a few roundings of the BN affine, the sum of four terms and the folded bias."""
    rep_in = x[:, layer.rep]
    bounds = error_bound(rep_in, layer.small_weight(), layer.spec, torch.float64)
    exact = reference_forward(rep_in, layer.small_weight(), layer.spec)
    scale = torch.stack([bn.weight / torch.sqrt(bn.running_var + bn.eps) for bn in (layer.bn_lora1, layer.bn_lora2, layer.bn_small)])
    magnitude = sum(s.abs().view(1, -1, 1, 1) * b.abs() for s, b in zip(scale, exact)) + rep_in.abs() + 1.0
    tol = sum(2 * s.abs().view(1, -1, 1, 1) * b for s, b in zip(scale, bounds)) + 16 * U64 * magnitude
    return torch.cat([tol, torch.zeros_like(x[:, layer.ghost])], dim=1)


@torch.no_grad()
def test_reparameterize_and_merged_export_agree_with_the_module():
    layer = _randomized_layer(channels=24, big=13, small=3, N_path=2)
    x = torch.randn(2, 24, 10, 10, dtype=torch.float64)
    expected = layer(x)
    tolerance = _layer_tolerance(layer, x)
    merged = layer.to_merged()
    assert ((merged(x) - expected).abs() <= tolerance).all(), "to_merged() differs beyond the bound"
    assert ((merged.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last)) - expected).abs() <= tolerance).all()
    layer.reparameterize()
    assert layer.reparameterized and layer.LoRA is not None and not hasattr(layer, "LoRAs")
    assert ((layer(x) - expected).abs() <= tolerance).all(), "reparameterize() differs beyond the bound"
    layer.reparameterize()  # idempotent
    assert ((layer.to_merged()(x) - expected).abs() <= tolerance).all()


def test_layer_errors_are_clear():
    with pytest.raises(ValueError, match="unknown SW implementation 'nope'"):
        resolve_impl("nope", "cpu")
    with pytest.raises(ValueError, match="ghost_ratio"):
        ShiftwiseConv2d(16, big_kernel=13, ghost_ratio=1.5)
    with pytest.raises(ValueError, match="unknown SW implementation 'nope'"):
        ShiftwiseConv2d(16, 16, 13, impl="nope")


OFFICIAL_VECTORS = Path(__file__).resolve().parent / "data" / "official.json"  # see tests/data/README.md


def _official_state_shapes(in_channels, big_kernel, small_kernel, bn, ghost_ratio, N_path):
    """The state dict the official ``ShifthWiseConv2dImplicit.__init__`` builds, key -> shape,
    written from its formulas (repN, out_n = repN * nk, the N_path ``Conv2d(repN, out_n, k,
    groups=repN)``, three BatchNorms; its ``AddShift_mp_module`` holds no tensors)."""
    rep_n = int(in_channels * (1 - ghost_ratio)) // 2 * 2
    out_n = rep_n * math.ceil(big_kernel / small_kernel)
    shapes = {f"LoRAs.{p}.weight": (out_n, 1, small_kernel, small_kernel) for p in range(N_path)}
    if bn:
        for name in ("bn_lora1", "bn_lora2", "bn_small"):
            shapes |= {f"{name}.{t}": (rep_n,) for t in ("weight", "bias", "running_mean", "running_var")}
            shapes[f"{name}.num_batches_tracked"] = ()
    return shapes


def _official_rep_ghost(in_channels, ghost_ratio):
    """The official split, replayed on numpy's global generator (state saved and restored)."""
    saved = np.random.get_state()
    try:
        rep_n = int(in_channels * (1 - ghost_ratio)) // 2 * 2
        np.random.seed(123)
        ghost = sorted(np.random.choice(in_channels, in_channels - rep_n, replace=False).tolist())
    finally:
        np.random.set_state(saved)
    return sorted(set(range(in_channels)) - set(ghost)), ghost


@pytest.mark.parametrize(
    "official, current",
    [
        ((80, 80, 51), dict(big_kernel=51)),
        ((24, 24, 13, 5, 1, 24, False, True, 0.3, 1, 2, False), dict(big_kernel=13, small_kernel=5, bn=False, ghost_ratio=0.3, N_path=1, N_rep=2)),
    ],
    ids=["defaults", "every-argument"],
)
def test_official_signature_builds_the_same_layer_as_the_keyword_form(official, current):
    names = ("in_channels", "out_channels", "big_kernel", "small_kernel", "stride", "group", "bn", "use_small_conv",
             "ghost_ratio", "N_path", "N_rep", "bias")  # fmt: skip
    layers = []
    for args, kwargs in [((), dict(in_channels=official[0], **current)), (official, {}), ((), dict(zip(names, official)))]:
        torch.manual_seed(7)  # the convs' initialisation
        layers.append(ShiftwiseConv2d(*args, impl="reference", **kwargs))
    keyword, positional, official_keywords = (layer.state_dict() for layer in layers)
    expected = _official_state_shapes(official[0], current["big_kernel"], current.get("small_kernel", 3),
                                      current.get("bn", True), current.get("ghost_ratio", 0.23), current.get("N_path", 2))
    assert {k: tuple(v.shape) for k, v in keyword.items()} == expected
    for other in (positional, official_keywords):
        assert other.keys() == keyword.keys()
        assert all(torch.equal(other[k], keyword[k]) for k in keyword)
    assert layers[0].spec == layers[1].spec == layers[2].spec
    assert all(torch.equal(layers[0].rep, layer.rep) and torch.equal(layers[0].ghost, layer.ghost) for layer in layers)


@torch.no_grad()
def test_official_call_builds_the_official_layer():
    """The official vector M=7, k=5, 2 SW channels, N_rep=3: an official call with 3 channels
    (default ghost_ratio: repN=2, one ghost channel), BN and two paths loads an official-shaped
    state dict strictly and gives bn(h) + bn(v) + bn(i) + x_rep, then the ghost channel, with
    (h, v, i) the official scatter kernel's recorded result."""
    entry = json.loads(OFFICIAL_VECTORS.read_text())["forward"][1]
    assert (entry["big_kernel"], entry["small_kernel"], entry["channels"], entry["groups"]) == (7, 5, 2, 3)
    layer = ShiftwiseConv2d(3, 3, 7, 5, 1, 3, True, True, 0.23, 2, 3, False, impl="reference").double().eval()
    weight = torch.tensor(entry["weight"], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    half = torch.randint(-2, 3, weight.shape, generator=generator).double()
    state = {"LoRAs.0.weight": weight - half, "LoRAs.1.weight": half}  # the official forward sums the paths
    bns = {}
    for name in ("bn_lora1", "bn_lora2", "bn_small"):
        bns[name] = [torch.tensor(v, dtype=torch.float64) for v in ([0.5, 2.0], [1.0, -1.0], [0.25, -0.5], [1.0, 4.0])]
        state |= dict(zip((f"{name}.weight", f"{name}.bias", f"{name}.running_mean", f"{name}.running_var"), bns[name]))
        state[f"{name}.num_batches_tracked"] = torch.tensor(5)
    assert {k: tuple(v.shape) for k, v in state.items()} == _official_state_shapes(3, 7, 5, True, 0.23, 2)
    layer.load_state_dict(state, strict=True)
    rep, ghost = _official_rep_ghost(3, 0.23)
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64, generator=generator)
    x[:, rep] = torch.tensor(entry["x"], dtype=torch.float64)

    def bn(t, name):
        w, b, mean, var = (p.view(1, -1, 1, 1) for p in bns[name])
        return (t - mean) / torch.sqrt(var + 1e-5) * w + b

    h, v, i = (torch.tensor(entry[name], dtype=torch.float64) for name in "hvi")
    expected = torch.cat([bn(h, "bn_lora1") + bn(v, "bn_lora2") + bn(i, "bn_small") + x[:, rep], x[:, ghost]], dim=1)
    _within(layer(x), expected, 1e-13, "official call vs the official layer's forward")


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((80, 40, 51), {}, ValueError, r"out_channels must equal in_channels \(80\)"),
        ((80, 51, 3), {}, ValueError, "now reads big_kernel as out_channels"),  # the old positional form
        ((80, 80, 51), dict(stride=2), ValueError, "stride must be 1"),
        ((80, 80, 51), dict(group=4), ValueError, "group must be 1 or in_channels"),
        ((80, 80, 51), dict(use_small_conv=False), ValueError, "use_small_conv=False is not supported"),
        ((80, 80, 51), dict(bias=True), ValueError, "bias=True is not supported"),
        ((80,), {}, TypeError, "missing big_kernel"),
    ],
)
def test_official_arguments_this_layer_cannot_honour_are_one_line_errors(args, kwargs, error, message):
    with pytest.raises(error, match=message) as caught:
        ShiftwiseConv2d(*args, **kwargs)
    assert "\n" not in str(caught.value)


def test_auto_picks_the_documented_first_available():
    if "numba_cpu" in CPU_IMPLS:
        assert resolve_impl("auto", "cpu") == "numba_cpu"
    assert resolve_impl("auto", "cpu") in CPU_IMPLS + ["reference"]


_RANKED_IMPL = """
import torch
from harness import Computes, Implementation
IMPLEMENTATION = Implementation(name={name!r}, fn=lambda x, w, spec: None, computes=Computes.OPERATOR,
                                devices=("cpu",), dtypes=(torch.float32,), rank={rank})
"""


def test_auto_follows_the_declared_ranks_and_notices_a_changed_folder(tmp_path, monkeypatch):
    """Highest rank first (ties by name); cached, and resolved again once a discovery finds a
    different set of files; an implementation that cannot run in the dtype is passed over."""
    from harness.registry import IMPLS_ENV, discover, generation

    (tmp_path / "low.py").write_text(_RANKED_IMPL.format(name="low", rank=1))
    (tmp_path / "also_low.py").write_text(_RANKED_IMPL.format(name="also_low", rank=1))
    monkeypatch.setenv(IMPLS_ENV, str(tmp_path))
    assert resolve_impl("auto", "cpu") == "also_low"
    assert resolve_impl("auto", "cpu", torch.float64) == "reference"  # neither runs float64
    before = generation()
    (tmp_path / "high.py").write_text(_RANKED_IMPL.format(name="high", rank=5))
    assert resolve_impl("auto", "cpu") == "also_low"  # cached until a discovery sees the change
    discover()
    assert generation() != before
    assert resolve_impl("auto", "cpu") == "high"


_DEPLOYING_IMPL = """
import torch
from harness import Computes, Implementation
IMPLEMENTATION = Implementation(name={name!r}, fn=lambda x, w, spec: None, computes=Computes.OPERATOR,
                                devices=("cpu",), dtypes=(torch.float32,), rank={rank},
                                deployed=lambda x, *args: torch.full_like(x, {rank}))
"""


@torch.no_grad()
def test_a_deployed_layers_eager_calls_follow_a_changed_set_of_implementations(tmp_path, monkeypatch):
    """The plain eager deployed path's cached lookup (``_eager_deployed``) is resolve_impl's: a
    layer with impl="auto" calls the highest-ranked implementation's deployed, keeps it until a
    discovery finds a different set of files, then calls the new one's; a deployed layer that
    returns the wrong shape is refused as through the op; a named implementation is called even
    where "auto" would pass it over (the GPU day's network path runs emulated ones so)."""
    from harness.registry import IMPLS_ENV, discover

    (tmp_path / "low.py").write_text(_DEPLOYING_IMPL.format(name="low", rank=1))
    monkeypatch.setenv(IMPLS_ENV, str(tmp_path))
    layer = ShiftwiseConv2d(8, 8, 7, 3, impl="auto").eval()
    layer.reparameterize()
    x = torch.randn(1, 8, 5, 5)
    assert torch.equal(layer(x), torch.full_like(x, 1))
    (tmp_path / "high.py").write_text(_DEPLOYING_IMPL.format(name="high", rank=5))
    assert torch.equal(layer(x), torch.full_like(x, 1))  # cached until a discovery sees the change
    discover()
    assert torch.equal(layer(x), torch.full_like(x, 5))
    (tmp_path / "high.py").write_text(_DEPLOYING_IMPL.format(name="high", rank=5).replace("full_like(x,", "full((1,),"))
    discover()
    with pytest.raises(ValueError, match=r"implementation high: deployed must return \(1, 8, 5, 5\) torch.float32"):
        layer(x)
    named = ShiftwiseConv2d(8, 8, 7, 3, impl="low").double().eval()  # "auto" passes "low" over in float64
    named.reparameterize()
    assert torch.equal(named(x.double()), torch.full_like(x.double(), 1))  # a named one is called as named


def test_the_models_name_no_implementation():
    """impl="auto"'s order is the implementations' declared ranks, not a list of names."""
    from pathlib import Path

    import harness.models

    names = set(available_implementations("cpu"))
    for path in Path(harness.models.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert not [n for n in names if f'"{n}"' in text or f"'{n}'" in text], f"{path} names an implementation"


def test_flop_counter_sees_the_custom_op():
    layer = ShiftwiseConv2d(20, 20, 13, 3, bn=False, N_path=1, impl="reference").eval()
    x = torch.randn(2, 20, 9, 9)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(x)
    assert counter.get_total_flops() == useful_flops(layer.spec, (2, layer.rep_n, 9, 9))


def test_custom_op_gradients_match_the_reference():
    layer = _randomized_layer(channels=12, big=7, small=3)
    x = torch.randn(1, 12, 6, 6, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    grad_op = x.grad.clone()
    x.grad = None
    rep_in, ghost_in = x[:, layer.rep], x[:, layer.ghost]
    h, v, i = reference_forward(rep_in, layer.small_weight(), layer.spec)
    out = torch.cat([layer.bn_lora1(h) + layer.bn_lora2(v) + layer.bn_small(i) + rep_in, ghost_in], dim=1)
    out.square().sum().backward()
    _within(grad_op, x.grad, 1e-12, "input gradient through the custom op")


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_reduced_sw_tiny_with_each_cpu_implementation_matches_the_reference_path(impl):
    """One block per stage at SW-tiny's widths (its real SW layer shapes), a 64x64 image:
    every SW layer within the float64 error bound, logits within END_TO_END_RTOL."""
    net = randomize_for_check(build_network("sw_tiny", impl, **REDUCED, dtype=torch.float64), 0).reparameterize()
    reference = set_impl(copy.deepcopy(net), "reference")
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    assert "4 SW layers within the error bound" in verify_network(net, reference, x)


def test_verification_catches_a_wrong_network():
    net = randomize_for_check(build_network("sw_tiny", "reference", depths=(1, 0, 0, 0), dtype=torch.float64), 0)
    reference = copy.deepcopy(net)
    layer = next(m for m in net.modules() if isinstance(m, ShiftwiseConv2d))
    layer.ghost = layer.ghost.flip(0)  # a wrong channel order
    with pytest.raises(ModelMismatch, match="logits differ"):
        verify_network(net, reference, torch.randn(1, 3, 32, 32, dtype=torch.float64))


@pytest.mark.parametrize("name", ["sw_tiny", "unireplknet_tiny", "slak_tiny"])
@torch.no_grad()
def test_reparameterized_and_merged_networks_agree(name):
    """Before and after ``reparameterize()`` and in the merged ("_rep") form, in float64: only
    rounding differs (folds of BN, GRN bias, layer scale; merged kernels), well within
    END_TO_END_RTOL."""
    depths = (1, 1, 2, 1) if name == "unireplknet_tiny" else REDUCED["depths"]
    net = randomize_for_check(build_network(name, "reference" if name.startswith("sw") else "auto", depths=depths,
                                            dims=(16, 32, 64, 128), dtype=torch.float64), 1)  # fmt: skip
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    expected = net(x)
    _within(net.reparameterize()(x), expected, END_TO_END_RTOL, f"{name} reparameterized")
    _within(make_rep(net)(x.contiguous(memory_format=net.memory_format)), expected, END_TO_END_RTOL, f"{name} merged")


@pytest.mark.parametrize("impl", sorted({"torch_roll", "numba_cpu"} & set(CPU_IMPLS)))
def test_torch_compile_of_a_network_with_the_custom_op_matches_eager(impl):
    """``fullgraph=True``: the custom ops (sw::shiftwise; sw::deployed where the implementation
    declares it) trace (their fake kernels) without a graph break. The aot_eager backend runs the
    same tracing as inductor without a C++ build (kept fast)."""
    net = randomize_for_check(build_network("sw_tiny", impl, depths=(1, 0, 0, 0), dims=(16, 32, 64, 128),
                                            dtype=torch.float64), 2).reparameterize()  # fmt: skip
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        _within(compiled(x), net(x), END_TO_END_RTOL, "compiled vs eager")


PUBLISHED_MARGIN = 0.05
#: SLaK's published counts are of its sparse model (40% of the weights pruned, SLaK paper).
DENSITY = {"slak": 0.6}


@pytest.mark.parametrize("name", [n for n, info in NETWORKS.items() if info.params_m is not None])
def test_params_and_gmacs_match_the_published_figures(name):
    """Within 5% (GMACs: FlopCounterMode's FLOPs / 2, conv and linear layers, 224x224)."""
    info = NETWORKS[name]
    net = build_network(name, device="meta")
    density = DENSITY.get(info.family, 1.0)
    params = sum(p.numel() for p in net.parameters()) * density / 1e6
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.empty(1, 3, 224, 224, device="meta"))
    gmacs = counter.get_total_flops() / 2e9 * density
    assert abs(params / info.params_m - 1) <= PUBLISHED_MARGIN, f"{name}: {params:.2f}M params vs published {info.params_m}M"
    assert abs(gmacs / info.gmacs - 1) <= PUBLISHED_MARGIN, f"{name}: {gmacs:.2f} GMACs vs published {info.gmacs}"


def test_build_network_errors_are_clear():
    with pytest.raises(ValueError, match="unknown network 'resnet50'"):
        build_network("resnet50")
    with pytest.raises(ValueError, match="has no SW layers"):
        build_network("unireplknet_tiny", "numba_cpu")
    with pytest.raises(ValueError, match="unknown SW implementation"):
        set_impl(build_network("sw_tiny", depths=(1, 0, 0, 0), device="meta"), "nope")


def test_build_network_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    build_network("unireplknet_tiny", depths=(1, 0, 0, 0), device="meta")
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------------- the model suite
def test_models_suite_is_a_model_suite():
    assert load_cases(suites=["models"]) == []  # the layer loader skips it
    quick = [c for c in load_model_cases(suites=["models"]) if c.tier == "quick"]
    assert {c.network for c in quick} >= {"sw_tiny", "sw_tiny_rep", "slak_tiny", "unireplknet_tiny"}
    runs = model_runs(["models"], "quick", ("cpu",), torch.float32)
    sw_runs = {r.implementation: r.skip for r in runs if r.case.network == "sw_tiny"}
    assert set(sw_runs) == set(available_implementations("cpu"))  # every implementation: run or a reason
    assert all(sw_runs[name] is None for name in CPU_IMPLS)


def test_table7_section_reads_model_rows():
    rows = pd.DataFrame([
        dict(kind="model", machine="m", network="sw_tiny", implementation="numba_cpu", computation="sw_tiny[numba_cpu]",
             batch=1, median_s=2.0, gflop_per_image=10.0, params=3e7, sw_time_share=0.5, threads=2),
        dict(kind="model", machine="m", network="unireplknet_tiny", implementation=None, computation="unireplknet_tiny",
             batch=1, median_s=0.5, gflop_per_image=10.0, params=3e7, sw_time_share=0.2, threads=2),
        dict(kind="implementation", machine="m", network=None, implementation=None, computation="x", batch=1, median_s=1.0),
    ])  # fmt: skip
    text = "\n".join(table7_section(rows))
    assert "## Table 7 on this machine" in text and "UniRepLKNet-T" in text
    assert "| SW-tiny / UniRepLKNet-T | 0.25 (SW: numba_cpu) | 0.34 |" in text
    assert f"{PAPER_A100['sw_tiny'][1]:g}" in text
    assert table7_section(rows[rows["kind"] != "model"]) == []

