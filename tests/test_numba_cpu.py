"""numba_cpu specifics beyond the generic equivalence tests: scratch reuse across calls, rows
wider than one row kernel, odd sizes, and its traffic model."""

import pytest
import torch

import harness
from harness.cases import Case
from harness.checking import CheckCase, assert_matches_reference
from harness.spec import ShiftwiseSpec
from harness.traffic import compulsory_bytes


@pytest.fixture(scope="module")
def impl():
    return harness.implementations()["numba_cpu"]


def _case(m, k, c, e, b, h, w, *, sparsity=0.3, tables="random", seed=3):
    return Case(f"M{m}k{k}", m, k, c, e, b, h, w, tables, seed, sparsity)


@pytest.mark.parametrize(
    "case",
    [
        _case(13, 3, 2, 4, 1, 9, 150),  # a row wider than one row kernel (column blocks)
        _case(51, 3, 2, 4, 1, 150, 5, sparsity=0.0),  # tall and narrow: long vertical ranges
        _case(15, 5, 3, 3, 2, 11, 13),  # odd H and W, k = 5
        _case(7, 7, 2, 2, 1, 1, 1, sparsity=0.0),  # M = k, a 1x1 map
    ],
    ids=lambda case: f"{case.name}-{case.height}x{case.width}",
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shapes(impl, case, dtype):
    assert_matches_reference(impl, CheckCase(case, dtype, "float"))


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
    for case in cases:
        assert_matches_reference(impl, CheckCase(case, "float32", "exact"))


def test_all_pruned_gives_zeros(impl):
    spec = ShiftwiseSpec.random(big_kernel=13, small_kernel=3, channels=3, groups=4, seed=0, sparsity=1.0)
    x = torch.randn(2, 3, 6, 5)
    weight = torch.full(spec.weight_shape, float("nan"))
    for branch in impl(x, weight, spec):
        assert torch.equal(branch, torch.zeros_like(branch))


def test_traffic_covers_the_compulsory_bytes(impl):
    spec = ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=60, groups=4)
    shape = (4, 60, 56, 56)
    moved = impl.traffic(spec, shape, 4)
    # Same x and outputs; its own int32 tables are larger than the official ones.
    assert moved >= compulsory_bytes(spec, shape, 4) - 4 * 60 * 17 * 9
    assert moved < 1.2 * compulsory_bytes(spec, shape, 4)
