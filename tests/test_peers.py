"""Peers: every PyTorch way computes the SW branches (or their sum) within the error bound,
their FLOP counts are what torch counts, and the roles and the baseline are declared."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness import Role, error_bound, reference_forward
from harness.bench import ResultMismatch, computations
from harness.cases import Case
from harness.checking import CheckCase, describe_mismatch, make_inputs
from harness.peers import peers, pytorch_shift_add, shift_add_flops
from harness.reference import summed_bound

#: Small cases: k does not divide M (asymmetric merged strips), pruned kernels (NaN weights),
#: odd sizes, and a map narrower than the kernel.
CASES = [
    Case("k-ndiv-M", 13, 3, 4, 2, 2, 9, 11, seed=3, sparsity=0.3),
    Case("k5", 15, 5, 3, 3, 1, 6, 17, seed=1, sparsity=0.0),
    Case("official", 7, 3, 5, 4, 2, 8, 8, tables="official", seed=0, sparsity=0.5),
]
WAYS = sorted(name for name, peer in peers().items() if peer.role is Role.PYTORCH_WAY)
COMPILED = {"compiled_rep_merged", "compiled_shift_add"}


def _outputs(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("name", WAYS)
def test_every_pytorch_way_matches_the_reference(name, case):
    if name in COMPILED and case.name != "k-ndiv-M":
        pytest.skip("torch.compile takes 5-30 s a case here; one case checks the compiled peers")
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    spec = case.spec()
    got = _outputs(peers()[name].prepare(case, inputs.x, inputs.weight).run())
    x64, w64 = inputs.x.double(), inputs.weight.double()
    expected = reference_forward(x64, w64, spec)
    if len(got) == 3:
        for label, out, ref, bound in zip("hvi", got, expected, error_bound(x64, w64, spec, torch.float32)):
            assert out.shape == ref.shape and out.dtype == torch.float32
            message = describe_mismatch(out, ref, bound, torch.float32)
            assert message is None, f"{name}, branch {label}: {message}"
    else:
        # One conv summing all three branches' products: the bound of that many terms.
        (out,) = got
        message = describe_mismatch(out, sum(expected), summed_bound(x64, w64, spec, torch.float32), torch.float32)
        assert message is None, f"{name}: {message}"


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", sorted(set(peers()) - COMPILED))
def test_conv_peer_flops_are_what_torch_counts(name):
    case = CASES[0]
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    prepared = peers()[name].prepare(case, inputs.x, inputs.weight)
    assert prepared.flops == counted_flops(prepared.run)
    assert prepared.setup_seconds is None


def test_shift_add_flops_are_its_small_conv_as_torch_counts_plus_its_adds():
    from harness import implementations, small_conv

    case = CASES[0]
    spec = case.spec()
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    conv = counted_flops(lambda: small_conv(inputs.x, inputs.weight, spec))
    windows = 2 * spec.groups * spec.nk + spec.groups
    assert shift_add_flops(spec, case.input_shape) == conv + windows * inputs.x.numel()
    # The adds are its slice-and-adds, one per window and output element (the counter sees no adds).
    shift_add = implementations()["torch_roll"].fn
    assert counted_flops(lambda: shift_add(small_conv(inputs.x, inputs.weight, spec), spec)) == conv


def test_compiled_peers_report_their_compile_time_and_the_eager_flops():
    case = CASES[0]
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    eager = peers()["rep_merged"].prepare(case, inputs.x, inputs.weight)
    compiled = peers()["compiled_rep_merged"].prepare(case, inputs.x, inputs.weight)
    assert compiled.flops == eager.flops and compiled.compulsory_bytes == eager.compulsory_bytes
    assert compiled.setup_seconds is not None and compiled.setup_seconds > 0


def test_roles_and_exactly_one_baseline():
    found = peers()
    assert [name for name, peer in found.items() if peer.baseline] == ["rep_merged"]
    assert {found[name].role for name in ("slak_strips", "unireplk_13x13")} == {Role.OTHER_OPERATOR}
    assert all(peer.role in (Role.PYTORCH_WAY, Role.OTHER_OPERATOR) for peer in found.values())
    assert all(name == peer.name for name, peer in found.items())


def test_channels_last_peers_keep_their_layout():
    case = CASES[0]
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    for name in ("rep_merged_cl", "rep_merged_cl_pad"):
        for out in peers()[name].prepare(case, inputs.x, inputs.weight).run():
            assert out.is_contiguous(memory_format=torch.channels_last), name


def test_the_compiled_shift_add_is_the_declared_pytorch_shift_add():
    from harness import Computes, implementations

    way = pytorch_shift_add()
    assert way is not None and way.computes is Computes.SHIFT_ADD and way.role is Role.PYTORCH_WAY
    assert way.name == "torch_roll" and peers()["compiled_shift_add"].unavailable() is None
    assert {impl.name for impl in implementations().values() if impl.role is Role.PYTORCH_WAY} == {"torch_roll"}


def test_summed_bound_is_tight_enough_to_catch_a_missing_branch():
    case = CASES[0]
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    x64, w64, spec = inputs.x.double(), inputs.weight.double(), case.spec()
    h, v, i = reference_forward(x64, w64, spec)
    bound = summed_bound(x64, w64, spec, torch.float32)
    assert describe_mismatch((h + v + i).float(), h + v + i, bound, torch.float32) is None
    assert describe_mismatch((h + v).float(), h + v + i, bound, torch.float32) is not None


@pytest.mark.parametrize("name", ["rep_merged", "rep_cross", "slak_strips", "unireplk_13x13"])
def test_every_timed_peer_is_verified_and_a_wrong_result_is_refused(name):
    """The benchmarks verify each peer's result before timing it (``Session.measure``), with the
    bound of its form: three branches, their sum, or another operator's own float64 evaluation."""
    (computation,) = [c for c in computations() if c.name == name]
    prepared = computation.prepare(CASES[0], torch.float32, "cpu")
    result = prepared.run()
    verified = prepared.verify(result)
    assert "within" in verified and "error bound" in verified
    outputs = result if isinstance(result, tuple) else (result,)
    wrong = tuple(o.clone() for o in outputs)
    wrong[-1].view(-1)[0] += 1e-2 * (1 + wrong[-1].abs().max())
    with pytest.raises(AssertionError):
        prepared.verify(wrong if isinstance(result, tuple) else wrong[0])
