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
