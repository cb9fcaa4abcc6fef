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
COMPILED = {"compiled_rep_merged", "compiled_shift_add", "compiled_rep_merged_max", "compiled_shift_add_max"}
#: Peers that check their own result (PreparedPeer.verify): another operator, the deployed form
#: (h + v + i + x), the lower-precision rows.
SELF_CHECKED = {name for name, peer in peers().items() if peer.role is not Role.PYTORCH_WAY}


def _outputs(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("name", WAYS)
def test_every_pytorch_way_matches_the_reference(name, case):
    if name in COMPILED and case.name != "k-ndiv-M":
        pytest.skip("torch.compile takes 5-30 s a case here; one case checks the compiled peers")
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    spec = case.spec()
    prepared = peers()[name].prepare(case, inputs.x, inputs.weight)
    got = _outputs(prepared.run())
    x64, w64 = inputs.x.double(), inputs.weight.double()
    expected = reference_forward(x64, w64, spec)
    if name in SELF_CHECKED:
        assert prepared.verify is not None and "within" in prepared.verify(got[0] if len(got) == 1 else got)
    elif prepared.residual_sum:  # a deployed form: one output h + v + i + x, one summation of all its products
        (out,) = got
        bound = summed_bound(x64, w64, spec, torch.float32, residual=True)
        message = describe_mismatch(out, sum(expected) + x64, bound, torch.float32)
        assert message is None, f"{name}: {message}"
    elif len(got) == 3:
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
    assert all(peer.role in (Role.PYTORCH_WAY, Role.OTHER_OPERATOR, Role.LOWER_PRECISION) for peer in found.values())
    lower = {name for name, peer in found.items() if peer.role is Role.LOWER_PRECISION}
    assert lower == {"rep_merged_cl_bf16", "rep_merged_cl_fp16"}
    assert all("LOWER PRECISION" in found[name].description for name in lower)
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
    assert way.name == "torch_roll" and peers()["compiled_shift_add"].unavailable("cpu") is None
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


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_lower_precision_rows_match_within_their_precisions_bound(case, dtype):
    name = {torch.bfloat16: "rep_merged_cl_bf16", torch.float16: "rep_merged_cl_fp16"}[dtype]
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    prepared = peers()[name].prepare(case, inputs.x, inputs.weight)
    got = prepared.run()
    assert all(out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last) for out in got)
    assert "lower precision" in prepared.verify(got)
    # half the element size: bytes are those of the lower precision
    assert prepared.compulsory_bytes * 2 == peers()["rep_merged_cl"].prepare(case, inputs.x, inputs.weight).compulsory_bytes


def test_lower_precision_bound_is_its_precisions_and_catches_a_wrong_result():
    from harness.reference import gamma, lower_precision_bound

    case = CASES[0]
    spec = case.spec()
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    x64, w64 = inputs.x.double(), inputs.weight.double()
    magnitude = reference_forward(x64.abs(), torch.nan_to_num(w64, nan=0.0).abs(), spec)
    bf16, fp16 = (lower_precision_bound(inputs.x, inputs.weight, spec, dtype) for dtype in (torch.bfloat16, torch.float16))
    for bounds, dtype in ((bf16, torch.bfloat16), (fp16, torch.float16)):
        for bound, m in zip(bounds, magnitude):
            relative = (bound / m)[m > 0.1]  # where underflow's absolute term is negligible
            # 4 roundings in the lower precision and float32's share of the sums: derived, not a constant
            assert gamma(4, dtype) < float(relative.min()) and float(relative.max()) < 1.01 * gamma(4, dtype) + 1e-4
    prepared = peers()["rep_merged_cl_bf16"].prepare(case, inputs.x, inputs.weight)
    wrong = tuple(out.clone() for out in prepared.run())
    h = reference_forward(x64, w64, spec).h
    wrong[0][0, 0, 0, 0] = (h[0, 0, 0, 0] + 3 * bf16.h[0, 0, 0, 0]).to(torch.bfloat16)  # 3 bounds off, less its rounding
    with pytest.raises(AssertionError, match="branch h in torch.bfloat16"):
        prepared.verify(wrong)
    with pytest.raises(AssertionError, match="computed in torch.float32"):
        prepared.verify(peers()["rep_merged_cl"].prepare(case, inputs.x, inputs.weight).run())


def test_fp16_waits_for_a_gpu_and_the_lower_precision_rows_for_the_full_tier():
    (fp16,) = [c for c in computations() if c.name == "rep_merged_cl_fp16"]
    (bf16,) = [c for c in computations() if c.name == "rep_merged_cl_bf16"]
    assert "float16 convolution on a CPU" in fp16.not_benchmarked_reason("cpu", "full")
    assert peers()["rep_merged_cl_fp16"].unavailable("cuda") is None and bf16.not_benchmarked_reason("cpu", "full") is None
    assert "lower precision" in bf16.not_benchmarked_reason("cpu", "quick")


def test_deployed_strips_are_the_reparameterized_layer_with_its_batchnorms_folded():
    """The deployed form's two strips with a real layer's folded branch BatchNorms and bias give
    that layer's SW channels (identity residual included), and without the residual they differ by x."""
    import torch.nn.functional as F

    from harness.models.bench import randomize_for_check
    from harness.models.layers import ShiftwiseConv2d
    from harness.peers import _radius, deployed_strips

    layer = ShiftwiseConv2d(8, 8, 13, 3, impl="reference").double().eval()
    randomize_for_check(layer, 0)
    layer.reparameterize()
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64)
    spec, rep = layer.spec, layer.rep
    h, v = deployed_strips(layer.small_weight().detach(), spec, layer.branch_scale)
    r, radius = spec.small_kernel // 2, _radius(spec)
    xr = x.index_select(1, rep)
    out = F.conv2d(xr, h, layer.branch_bias, padding=(r, radius), groups=len(rep)) + F.conv2d(xr, v, padding=(radius, r), groups=len(rep))
    with torch.no_grad():
        want = layer(x)[:, : len(rep)]
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    h0, _ = deployed_strips(layer.small_weight().detach(), spec, layer.branch_scale, residual=False)
    torch.testing.assert_close(F.conv2d(xr, h - h0, padding=(r, radius), groups=len(rep)), xr, rtol=1e-12, atol=1e-12)


def test_the_deployed_forms_check_refuses_a_missing_residual():
    (computation,) = [c for c in computations() if c.name == "deployed_merged_cl"]
    prepared = computation.prepare(CASES[0], torch.float32, "cpu")
    result = prepared.run()
    assert "h + v + i + x" in prepared.verify(result)
    inputs = make_inputs(CheckCase(CASES[0], "float32", "float"), nan_pruned=True)
    with pytest.raises(AssertionError, match="h \\+ v \\+ i \\+ x"):
        prepared.verify(result - inputs.x)
