"""numba_cpu specifics beyond the generic equivalence tests: both forms on awkward shapes, scratch
reuse across calls, the merged-kernel memo, channels_last input, the form choice and traffic."""

import pytest
import torch

import harness
from harness.cases import Case
from harness.checking import CheckCase, assert_matches_reference, describe_mismatch, make_inputs
from harness.spec import ShiftwiseSpec
from harness.traffic import compulsory_bytes

FORMS = ("planes", "channels")


@pytest.fixture(scope="module")
def impl():
    return harness.implementations()["numba_cpu"]


def _case(m, k, c, e, b, h, w, *, sparsity=0.3, tables="random", seed=3):
    return Case(f"M{m}k{k}", m, k, c, e, b, h, w, tables, seed, sparsity)


def assert_form_matches(impl, case, form, dtype="float32", layout="contiguous", weight=None):
    inputs = make_inputs(CheckCase(case, dtype, "float", layout=layout), nan_pruned=True)
    spec = case.spec()
    weight = inputs.weight if weight is None else weight
    got = impl.fn(inputs.x, weight, spec, form=form)
    x64, w64 = inputs.x.double(), weight.double()
    expected = harness.reference_forward(x64, w64, spec)
    for label, out, ref, bound in zip("hvi", got, expected, harness.error_bound(x64, w64, spec, inputs.x.dtype)):
        assert out.shape == ref.shape
        message = describe_mismatch(out, ref, bound, inputs.x.dtype)
        assert message is None, f"{form} {case.name} branch {label}: {message}"


SHAPES = [
    _case(13, 3, 2, 4, 1, 9, 150),  # a row wider than one row kernel (column blocks)
    _case(51, 3, 2, 4, 1, 150, 5, sparsity=0.0),  # tall and narrow: long vertical ranges
    _case(15, 5, 3, 3, 2, 11, 13),  # odd H and W, k = 5 (the channels form's generic kernel)
    _case(7, 7, 2, 2, 1, 1, 1, sparsity=0.0),  # M = k, a 1x1 map
    _case(47, 3, 37, 4, 2, 14, 14, tables="official", seed=0),  # a partial channel block (37 = 2*16 + 5)
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda case: f"{case.name}-{case.height}x{case.width}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("form", FORMS)
def test_shapes(impl, case, dtype, form):
    assert_form_matches(impl, case, form, dtype)


@pytest.mark.parametrize("form", FORMS)
def test_channels_last_and_strided_inputs(impl, form):
    for layout in ("channels_last", "strided"):
        assert_form_matches(impl, _case(13, 3, 20, 4, 2, 9, 11), form, layout=layout)


def test_default_form_matches_the_reference(impl):
    assert_matches_reference(impl, CheckCase(_case(13, 3, 20, 4, 2, 7, 7), "float32", "exact"))


def test_scratch_reused_across_specs(impl):
    """Calls with different specs and sizes in a row (and back): scratch areas are reused,
    and whatever one call leaves in them must not leak into another's results."""
    cases = [
        _case(51, 3, 3, 4, 2, 20, 17, seed=1),
        _case(47, 3, 3, 4, 2, 20, 17, seed=2),  # same map size, different margins
        _case(51, 3, 3, 4, 2, 20, 17, seed=1, sparsity=0.6),
        _case(13, 3, 4, 2, 1, 7, 7, seed=4),
        _case(51, 3, 3, 4, 2, 20, 17, seed=1),
    ]
    for form in FORMS:
        for case in cases:
            assert_form_matches(impl, case, form)


def test_changed_weights_are_merged_again(impl):
    """The channels form memoizes merged kernels on the weight's contents: an in-place change
    of one weight (same tensor, same spec) must show in the next result."""
    case = _case(13, 3, 5, 4, 1, 7, 7, sparsity=0.0)
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    weight = inputs.weight.clone()
    assert_form_matches(impl, case, "channels", weight=weight)
    weight[3, 0, 1, 1] += 1.0
    assert_form_matches(impl, case, "channels", weight=weight)


@pytest.mark.parametrize("form", FORMS)
def test_all_pruned_gives_zeros(impl, form):
    spec = ShiftwiseSpec.random(big_kernel=13, small_kernel=3, channels=3, groups=4, seed=0, sparsity=1.0)
    x = torch.randn(2, 3, 6, 5)
    weight = torch.full(spec.weight_shape, float("nan"))
    for branch in impl.fn(x, weight, spec, form=form):
        assert torch.equal(branch, torch.zeros_like(branch))


def test_unknown_form_is_refused(impl):
    spec = ShiftwiseSpec.random(big_kernel=7, small_kernel=3, channels=2, groups=2, seed=0)
    with pytest.raises(ValueError, match="form must be one of"):
        impl.fn(torch.zeros(1, 2, 4, 4), torch.zeros(spec.weight_shape), spec, form="rows")


def test_form_choice_follows_the_work():
    """Small maps go to the channels form (full lanes, clipped merged taps); a large map with
    many pruned kernels to the planes form (pruned kernels cost nothing there)."""
    from importlib import import_module

    module = import_module(harness.implementations()["numba_cpu"].fn.__module__)
    stage4 = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=492, groups=4)
    assert module.choose_form(stage4, (4, 492, 7, 7), 4) == "channels"
    stage1 = ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=60, groups=4)
    assert module.choose_form(stage1.pruned(0.6, seed=0), (4, 60, 56, 56), 4) == "planes"


def test_traffic_covers_the_compulsory_bytes(impl):
    for big, channels, size in [(51, 60, 56), (13, 492, 7)]:
        spec = ShiftwiseSpec.official(big_kernel=big, small_kernel=3, channels=channels, groups=4)
        shape = (4, channels, size, size)
        moved = impl.traffic(spec, shape, 4)
        # Same x and outputs; its own tables / merged kernels differ from the official tables.
        assert moved >= compulsory_bytes(spec, shape, 4) - 4 * channels * spec.nk * 9
        assert moved < 1.2 * compulsory_bytes(spec, shape, 4)


# ----------------------------------------------------------------------------- the deployed layer
def _gamma(n: int, dtype: torch.dtype) -> float:
    u = torch.finfo(dtype).eps / 2
    return n * u / (1 - n * u)


def _deployed_pair(channels, big, small, ghost_ratio, dtype, seed, integers=False):
    """A reparameterized layer with a folded BatchNorm after it, on numba_cpu (the deployed op)
    and on the reference's unfused path in float64; parameters random (small integers: exact)."""
    import copy

    from harness.models import ShiftwiseConv2d

    generator = torch.Generator().manual_seed(seed)

    def draw(shape):
        if integers:
            return torch.randint(-2, 3, shape, generator=generator).double()
        return torch.empty(shape, dtype=torch.float64).uniform_(-1.5, 1.5, generator=generator)

    layer = ShiftwiseConv2d(channels, channels, big, small, ghost_ratio=ghost_ratio, impl="reference").double().eval()
    with torch.no_grad():
        for conv in layer.LoRAs:
            conv.weight.copy_(draw(conv.weight.shape))
        layer.reparameterize()
        layer.branch_scale.copy_(draw(layer.branch_scale.shape))
        layer.branch_bias.copy_(draw(layer.branch_bias.shape))
        bn = torch.nn.BatchNorm2d(channels).double().eval()
        bn.running_var.fill_(1.0 - bn.eps if integers else 0.7)  # scale = weight exactly when integers
        bn.running_mean.zero_()
        bn.weight.copy_(draw((channels,)))
        bn.bias.copy_(draw((channels,)))
        layer.fold_following_bn(bn)
    reference = copy.deepcopy(layer)
    deployed = copy.deepcopy(layer).to(dtype)
    deployed.impl = "numba_cpu"
    return deployed, reference


DEPLOYED_SHAPES = [
    (40, 13, 3, 0.23, 2, 9, 11),  # repN 30: the last lane block's spare lanes land in ghost places
    (18, 7, 3, 0.0, 1, 6, 5),  # no ghost channels, C < one lane block: output wider than C
    (24, 15, 5, 0.23, 2, 11, 13),  # k = 5 (the generic row kernel), odd map
    (37, 51, 3, 0.5, 1, 14, 14),  # a large M on a small map
]


@pytest.mark.parametrize("shape", DEPLOYED_SHAPES, ids=lambda s: f"C{s[0]}M{s[1]}k{s[2]}")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@torch.no_grad()
def test_deployed_layer_matches_the_unfused_layer(shape, layout, dtype):
    """One call (sw::deployed) against the unfused layer in float64: within the rounding bound
    of the fused sum (every term of the three branches, the identity and the bias, each weight
    scaled by the folded branch and output scales: gamma_{n+4} of the magnitudes)."""
    channels, big, small, ghost_ratio, batch, height, width = shape
    deployed, reference = _deployed_pair(channels, big, small, ghost_ratio, dtype, seed=channels)
    x64 = torch.randn(batch, channels, height, width, dtype=torch.float64)
    x = x64.to(dtype).contiguous(memory_format=getattr(torch, layout if layout == "channels_last" else "contiguous_format"))
    got = deployed(x)
    want = reference(x.double())
    lanes = 64 // x.element_size()
    if channels >= -(-reference.rep_n // lanes) * lanes:  # else a view of a buffer wider than C
        assert got.is_contiguous(memory_format=torch.channels_last), "the deployed layer writes channels_last"
    assert got.shape == want.shape and got.dtype == dtype
    spec, rep_n = reference.spec, reference.rep_n
    a, b = reference.output_scale, reference.output_shift
    s, bias = reference.branch_scale, reference.branch_bias
    rep_in = x.double()[:, reference.rep]
    magnitude = harness.reference_forward(rep_in.abs(), reference.LoRA.weight.abs(), spec)
    view = lambda t: t.view(1, -1, 1, 1)  # noqa: E731
    total = sum(view(s[n].abs()) * m for n, m in enumerate(magnitude)) + rep_in.abs() + view(bias.abs())
    terms = 2 * spec.groups * spec.nk * small * small + spec.groups * small * small + 2
    sw_bound = (_gamma(terms + 4, dtype) + _gamma(terms + 4, torch.float64)) * (view(a[:rep_n].abs()) * total + view(b[:rep_n].abs()))
    ghost_in = x.double()[:, reference.ghost]
    ghost_bound = (_gamma(2, dtype) + _gamma(2, torch.float64)) * (view(a[rep_n:].abs()) * ghost_in.abs() + view(b[rep_n:].abs()))
    bound = torch.cat([sw_bound, ghost_bound], dim=1)
    excess = (got.double() - want).abs() - bound
    assert bool((excess <= 0).all()), f"deployed layer exceeds the bound by up to {excess.max().item():.3g}"


@pytest.mark.parametrize("shape", DEPLOYED_SHAPES[:3], ids=lambda s: f"C{s[0]}M{s[1]}k{s[2]}")
@torch.no_grad()
def test_deployed_layer_is_exact_on_integers(shape):
    """Exact mode: small-integer inputs, weights, scales and biases keep every partial sum an
    integer far below 2**24, so float32 in any order must equal the float64 unfused layer bit
    for bit."""
    channels, big, small, ghost_ratio, batch, height, width = shape
    deployed, reference = _deployed_pair(channels, big, small, ghost_ratio, torch.float32, seed=7, integers=True)
    x = torch.randint(-3, 4, (batch, channels, height, width), generator=torch.Generator().manual_seed(1)).double()
    want = reference(x)
    assert want.abs().max() < 2**20
    for memory_format in (torch.contiguous_format, torch.channels_last):
        got = deployed(x.float().contiguous(memory_format=memory_format))
        assert torch.equal(got.double(), want), f"not bit for bit ({memory_format})"


@torch.no_grad()
def test_deployed_layer_is_used_and_sees_changed_parameters():
    """After reparameterize() the layer makes one sw::deployed call (no sw::shiftwise, no
    index_select or cat), and an in-place change of a folded scale shows in the next result
    (the folded kernels are memoized on the parameters' bits)."""
    from torch.profiler import profile

    deployed, reference = _deployed_pair(40, 13, 3, 0.23, torch.float64, seed=3)
    x = torch.randn(1, 40, 8, 8, dtype=torch.float64)
    deployed(x)
    with profile() as prof:
        deployed(x)
    names = [event.key for event in prof.key_averages()]
    assert "sw::deployed" in names and "sw::shiftwise" not in names and "aten::cat" not in names
    for module in (deployed, reference):
        module.branch_scale[1, 3] += 0.5
        module.output_shift[35] -= 0.25
    assert torch.allclose(deployed(x), reference(x), rtol=1e-12, atol=1e-12)


@torch.no_grad()
def test_plain_eager_calls_skip_the_dispatcher_and_traced_ones_keep_the_op(monkeypatch):
    """In plain eager inference the layer calls the implementation's deployed directly (the
    Python custom op's dispatch costs about what a small layer's kernel does), bit for bit the
    op's result and its output checked the same way; under a profiler, a dispatch mode
    (FlopCounterMode) or on meta tensors it goes through the op, so that they still see it."""
    import sys

    from torch.profiler import profile
    from torch.utils.flop_counter import FlopCounterMode

    from harness.models import layers

    deployed, _ = _deployed_pair(40, 13, 3, 0.23, torch.float32, seed=5)
    x = torch.randn(2, 40, 9, 9).contiguous(memory_format=torch.channels_last)
    via_op = torch.ops.sw.deployed(x, deployed.LoRA.weight, deployed.branch_scale, deployed.branch_bias,
                                   deployed.output_scale, deployed.output_shift, deployed.rep, deployed.ghost,
                                   deployed.spec_key, deployed.impl)  # fmt: skip
    callers, check = [], layers._checked_deployed_output

    def spy(*args):
        callers.append(sys._getframe(1).f_code.co_name)  # the layer's _deployed_eager, or the op's body
        return check(*args)

    monkeypatch.setattr(layers, "_checked_deployed_output", spy)
    direct = deployed(x)
    with profile() as prof:
        deployed(x)
    with FlopCounterMode(display=False) as flops:
        deployed(x)
    assert callers == ["_deployed_eager", "_run_deployed", "_run_deployed"], callers
    assert torch.equal(direct, via_op)
    assert "sw::deployed" in [event.key for event in prof.key_averages()]
    assert flops.get_total_flops() > 0, "FlopCounterMode counted the op's FLOP formula"
    assert not layers._plain_eager(x.to("meta"))


@pytest.mark.parametrize("case", SHAPES, ids=lambda case: f"{case.name}-{case.height}x{case.width}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("form", FORMS)
def test_backward_forms_match_the_reference_gradients(case, dtype, form):
    """Both backward forms (the planes form's adjoint gather; the channels form's gradients
    through the merged kernels, mapped back) within ``gradient_bound``; pruned kernels exactly 0."""
    import importlib

    from harness.checking.gradients import gradient_inputs
    from harness.reference import Branches, gradient_bound, reference_gradients

    package = importlib.import_module("impls.numba_cpu")
    inputs = gradient_inputs(CheckCase(case, dtype, "float"))
    spec = case.spec()
    x64, w64 = inputs.x.double(), inputs.weight.double()
    g64 = Branches(*(g.double() for g in inputs.grads))
    want, bounds = reference_gradients(x64, w64, spec, g64), gradient_bound(x64, w64, spec, g64, inputs.x.dtype)
    got = package.backward(inputs.x, inputs.weight, spec, *inputs.grads, form=form)
    for label, mine, theirs, bound in zip(("x", "weight"), got, want, bounds):
        assert describe_mismatch(mine, theirs, bound, inputs.x.dtype) is None, label
