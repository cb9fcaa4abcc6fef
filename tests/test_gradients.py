"""Declared backwards (``Implementation.backward``) against the float64 reference's gradients:
the bound, the check, the known-bad backwards, and the custom op's choice of backward."""

import dataclasses

import pytest
import torch

from harness import discover, implementations
from harness.cases import Case, load_cases
from harness.checking.gradients import check_backward, gradient_inputs
from harness.checking.inputs import CheckCase
from harness.models import layers
from harness.reference import Branches, gradient_bound, reference_gradients
from tests.bad_impls._common import bad_backward_record

from tests.test_known_bad import BAD_IMPLS

SMALL = [
    Case("odd-map", 13, 3, 6, 3, 2, 9, 11, tables="random", seed=3, sparsity=0.3),
    Case("k5-asym", 11, 5, 4, 2, 1, 8, 6, tables="random", seed=5, sparsity=0.6),
    Case("one-pixel", 7, 3, 3, 4, 2, 1, 1, seed=1),
    Case("k1", 5, 1, 5, 2, 1, 6, 7, tables="random", seed=2, sparsity=0.3),
]
BAD_BACKWARDS = ("bad_unreversed_shifts", "bad_backward_ignores_sparsity", "bad_backward_wrong_channel")


def _declared() -> list[str]:
    return sorted(name for name, impl in implementations().items() if impl.backward is not None and impl.unavailable_reason("cpu") is None)


def test_numba_cpu_torch_roll_and_cuda_atomic_declare_a_backward():
    assert {"numba_cpu", "torch_roll", "cuda_atomic"} <= set(_declared())


@pytest.mark.parametrize("mode", ["exact", "float"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", _declared())
def test_declared_backward_matches_reference_on_edge_shapes(name, dtype, mode):
    impl = implementations()[name]
    for case in SMALL:
        assert check_backward(impl, CheckCase(case, dtype, mode), case.spec()) == [], case


def _real_layers() -> list[Case]:
    """Every SW-tiny stage layer at batch 1, sparsity 0.3 (pruned kernels in play; SW-small's
    layers have the same kernels on more channels)."""
    seen, found = set(), []
    for case in load_cases():
        key = (case.suite, case.big_kernel, case.channels, case.height)
        if case.suite == "sw_tiny" and case.batch == 1 and key not in seen:
            seen.add(key)
            found.append(dataclasses.replace(case, sparsity=0.3))
    return found


@pytest.mark.parametrize("case", _real_layers(), ids=lambda c: f"{c.suite}-{c.name}")
def test_numba_cpu_backward_matches_reference_on_real_layers(case):
    """Float mode, float32, within ``gradient_bound``; the numba_cpu backward is the one a
    network trains with."""
    failures = check_backward(implementations()["numba_cpu"], CheckCase(case, "float32", "float"), case.spec())
    assert failures == []


@pytest.mark.parametrize("name", BAD_BACKWARDS)
def test_known_bad_backwards_are_caught(name):
    impl = discover(BAD_IMPLS).implementations[name]
    for mode in ("exact", "float"):
        kinds = {kind for kind, _ in check_backward(impl, CheckCase(SMALL[0], "float32", mode), SMALL[0].spec())}
        assert kinds == {"gradient"}, mode


def test_the_bad_backwards_base_is_right():
    """The known-bad backwards break a correct backward: unbroken, it passes."""
    assert check_backward(bad_backward_record("base"), CheckCase(SMALL[0], "float64", "exact"), SMALL[0].spec()) == []


def test_gradient_bound_holds_and_is_tight_enough():
    """float32 reference gradients lie within the bound of the float64 ones, and the bound is
    far below the gradients' size (an O(1) error, as a wrong move gives, is outside it)."""
    case = SMALL[0]
    spec = case.spec()
    inputs = gradient_inputs(CheckCase(case, "float64", "float"))
    grads64 = reference_gradients(inputs.x, inputs.weight, spec, inputs.grads)
    grads32 = reference_gradients(inputs.x.float(), inputs.weight.float(), spec, Branches(*(g.float() for g in inputs.grads)))
    bounds = gradient_bound(inputs.x, inputs.weight, spec, inputs.grads, torch.float32)
    for got, want, bound in zip(grads32, grads64, bounds):
        assert bool(((got.double() - want).abs() <= bound).all())
        assert float(bound.max()) < 1e-3 * float(want.abs().max())
    pruned = torch.as_tensor(~spec.active).reshape(-1)
    assert float(bounds[1].reshape(spec.channels * spec.nk, -1)[pruned].abs().max()) == 0.0


def test_custom_op_runs_the_declared_backward(monkeypatch):
    """A training step through ``torch.ops.sw.shiftwise`` calls the implementation's own
    backward, and falls back to the reference's where there is none."""
    calls = []
    base = bad_backward_record("spy")

    def spy(x, weight, spec, gh, gv, gi):
        calls.append(x.shape)
        return base.backward(x, weight, spec, gh, gv, gi)

    record = dataclasses.replace(base, backward=spy)
    monkeypatch.setattr(layers, "_implementation", lambda name: record)
    case = SMALL[0]
    spec = case.spec()
    inputs = gradient_inputs(CheckCase(case, "float64", "exact"))
    x, w = inputs.x.clone().requires_grad_(), inputs.weight.clone().requires_grad_()
    out = torch.ops.sw.shiftwise(x, w, layers.register_spec(spec), "spy")
    torch.autograd.backward(out, list(inputs.grads))
    assert calls == [x.shape]
    assert layers.backward_used("spy") == "spy"
    want = reference_gradients(inputs.x, inputs.weight, spec, inputs.grads)
    assert torch.equal(x.grad, want[0]) and torch.equal(w.grad, want[1])
    monkeypatch.setattr(layers, "_implementation", lambda name: dataclasses.replace(base, backward=None))
    assert layers.backward_used("spy") == "reference"


def test_run_backward_refuses_a_wrong_result():
    record = dataclasses.replace(bad_backward_record("short"), backward=lambda x, w, spec, *g: (x, w[:1]))
    case = SMALL[0]
    inputs = gradient_inputs(CheckCase(case, "float32", "exact"))
    with pytest.raises(ValueError, match="backward's grad_weight must be"):
        record.run_backward(inputs.x, inputs.weight, case.spec(), inputs.grads)
