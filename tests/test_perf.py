"""FLOP and byte models against counts made independently, and the derived figures."""

import pytest
import torch
from hypothesis import given
from torch.utils.flop_counter import FlopCounterMode

from harness import ShiftwiseSpec
from harness.checking import CheckCase, make_inputs
from harness.peers import cross_kernel, peers
from harness.perf import Workload, conv_flops, derived_metrics, useful_flops
from harness.reference import reference_forward, small_conv
from harness.traffic import compulsory_bytes

from tests.strategies import cases


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def literal_additions(spec: ShiftwiseSpec, shape) -> int:
    """Walk every output element and every term of its three sums (the gather form)."""
    batch, channels, height, width = shape
    e, s = spec.extra_pad, spec.shifts
    hy, wy = height + 2 * e, width + 2 * e
    adds = 0
    for c in range(channels):
        for i in range(height):
            for x in range(width):
                for g in range(spec.groups):
                    for j in range(spec.nk):
                        if spec.active[c, j]:
                            adds += 0 <= x - s[spec.slot_h[g, c, j]] < wy  # row i + e is always in y
                            adds += 0 <= i - s[spec.slot_v[g, c, j]] < hy
                    adds += bool(spec.active[c, spec.ident[g, c]])
    return batch * adds


@given(cases(max_big_kernel=15))
def test_useful_flops_are_the_active_convs_torch_counts_plus_one_add_per_term(case):
    spec, shape = case.spec(), case.input_shape
    inputs = make_inputs(CheckCase(case, "float64", "float"), nan_pruned=False)
    # The conv of only the active kernels, counted by torch's FLOP counter.
    active = torch.tensor(spec.active.reshape(-1))
    pad = spec.small_kernel - 1
    channel_of_kernel = torch.arange(spec.channels).repeat_interleave(spec.nk)[active]
    conv = counted_flops(
        lambda: torch.nn.functional.conv2d(
            inputs.x[:, channel_of_kernel], inputs.weight[active], padding=pad, groups=int(active.sum())
        )
    ) if active.any() else 0  # fmt: skip
    assert conv_flops(spec, shape) == conv
    assert useful_flops(spec, shape) == conv + literal_additions(spec, shape)


def test_useful_flops_of_sw_tiny_stage_1_at_batch_4_are_about_the_issue_s_0_35_gflop():
    spec = ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=60, groups=4)
    shape = (4, 60, 56, 56)
    conv = 2 * 9 * 60 * 17 * 58 * 58 * 4
    assert conv_flops(spec, shape) == conv
    every_term = conv + 4 * 60 * 56 * 56 * (2 * 4 * 17 + 4)  # 0.352 GFLOP, off-map moves included
    assert 0.9 * every_term < useful_flops(spec, shape) < every_term  # off-map moves are not useful
    assert useful_flops(spec.pruned(0.6, seed=0), shape) < 0.5 * useful_flops(spec, shape)


def test_compulsory_bytes_are_the_bytes_of_the_tensors_and_tables_themselves():
    spec = ShiftwiseSpec.random(big_kernel=13, small_kernel=3, channels=3, groups=2, seed=1, sparsity=0.4)
    x = torch.zeros(2, 3, 5, 6)
    weight = torch.zeros(spec.weight_shape)
    pad_hv, idx_identit = spec.to_official_tables()
    outputs = reference_forward(x, weight, spec)
    expected = x.nbytes + weight.nbytes + pad_hv.nbytes + idx_identit.nbytes + spec.active.astype(bool).nbytes
    expected += sum(out.nbytes for out in outputs)
    assert compulsory_bytes(spec, tuple(x.shape), 4) == expected


@pytest.mark.parametrize("name", ["rep_merged", "rep_cross", "slak_strips", "unireplk_13x13"])
def test_peer_flops_are_what_torch_counts_for_their_convs(name):
    from harness.cases import Case

    case = Case("c", 13, 3, 4, 2, 2, 9, 11, seed=3)
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    prepared = peers()[name].prepare(case, inputs.x, inputs.weight)
    assert prepared.flops == counted_flops(prepared.run)


def test_the_cross_kernel_conv_is_the_sum_of_the_three_branches():
    spec = ShiftwiseSpec.random(big_kernel=13, small_kernel=3, channels=3, groups=2, seed=2, sparsity=0.3)  # k ∤ M
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    weight = torch.randn(spec.weight_shape, dtype=torch.float64)
    weight.view(3, spec.nk, -1)[torch.as_tensor(~spec.active)] = float("nan")
    kernel = cross_kernel(weight, spec)
    got = torch.nn.functional.conv2d(x, kernel, padding=kernel.shape[-1] // 2, groups=3)
    torch.testing.assert_close(got, sum(reference_forward(x, weight, spec)))


def test_small_conv_output_size_matches_the_flop_model_positions():
    spec = ShiftwiseSpec.official(big_kernel=7, small_kernel=5, channels=2, groups=1)
    y = small_conv(torch.zeros(1, 2, 4, 3), torch.zeros(spec.weight_shape), spec)
    e = spec.extra_pad
    assert y.shape[2:] == (4 + 2 * e, 3 + 2 * e)


class TestDerivedMetrics:
    work = Workload(batch=4, flops=8_000_000_000, compulsory_bytes=1_000_000_000, traffic_bytes=4_000_000_000)

    def test_throughput_and_density(self):
        m = derived_metrics(self.work, 0.5, peak_gflops=100.0, peak_gbps=10.0)
        assert (m.images_per_s, m.gflops, m.gbps) == (8.0, 16.0, 8.0)  # traffic bytes, not compulsory
        assert (m.density, m.compulsory_density) == (2.0, 8.0)

    def test_roofline_takes_the_binding_roof(self):
        compute_bound = derived_metrics(self.work, 0.5, peak_gflops=100.0, peak_gbps=1000.0)
        assert compute_bound.bound == "compute" and compute_bound.roofline_seconds == pytest.approx(0.08)
        assert compute_bound.pct_roofline == pytest.approx(16.0)
        memory_bound = derived_metrics(self.work, 0.5, peak_gflops=1000.0, peak_gbps=10.0)
        assert memory_bound.bound == "memory" and memory_bound.roofline_seconds == pytest.approx(0.1)

    def test_without_peaks_there_is_no_roofline(self):
        m = derived_metrics(self.work, 0.5, peak_gflops=None, peak_gbps=10.0)
        assert m.pct_roofline is None and m.bound is None and m.gflops == 16.0 and m.impossible is None

    def test_faster_than_the_roofline_is_flagged_impossible(self):
        # The roofline here is 0.08 s (8 GFLOP at 100 GFLOP/s): 0.079 s cannot be, 0.081 s can.
        assert derived_metrics(self.work, 0.079, peak_gflops=100.0, peak_gbps=1000.0).impossible is True
        assert derived_metrics(self.work, 0.081, peak_gflops=100.0, peak_gbps=1000.0).impossible is False

    def test_without_a_traffic_model_bytes_are_compulsory(self):
        work = Workload(batch=1, flops=10, compulsory_bytes=5, traffic_bytes=None)
        assert derived_metrics(work, 1.0, None, None).density == 2.0

    @pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf")])
    def test_a_bad_time_is_refused(self, seconds):
        with pytest.raises(ValueError, match="seconds must be a positive finite time"):
            derived_metrics(self.work, seconds, None, None)
