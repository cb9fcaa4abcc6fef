"""Training benchmarks' pieces: the suites that measure training, the layer forward + backward
items and their verification, a network's gradient check, and the report's training column."""

import dataclasses

import pandas as pd
import pytest
import torch

from harness.bench import ResultMismatch, Selection, layer_cases
from harness.cases import Case, load_cases, load_model_cases
from harness.models import layers, training
from harness.models.bench import ModelMismatch
from harness.models.networks import build_network
from harness.models.table7 import table7_section
from harness.registry import Role, implementations
from tests.bad_impls._common import bad_backward_record

SMALL = Case("odd-map", 13, 3, 6, 2, 2, 9, 11, tables="random", seed=3, sparsity=0.3)
QUICK = Selection(None, "quick", ("cpu",), torch.float32)


def _way(name: str) -> training.LayerWay:
    return next(way for way in training.layer_ways_declared() if way.name == name)


def test_training_suites_are_timed_only_by_the_training_items():
    training_cases = load_cases(suites=["training_layers"])
    assert training_cases and {c.suite for c in load_cases(measures="training")} == {"training_layers"}
    assert not {c.name for c in layer_cases(QUICK)} & {c.name for c in training_cases}
    assert {m.suite for m in load_model_cases(measures="training")} == {"training"}
    assert "training" not in {m.suite for m in load_model_cases()}
    items = training.layer_training_items(QUICK)
    run = {(i.computation, i.case_name) for i in items if i.skip is None}
    quick = {c.name for c in training_cases if c.tier == "quick"}
    for way in ("numba_cpu", "merged_autograd_cl", "merged_autograd_nchw"):
        assert {case for name, case in run if name == way} == quick, way
    skipped = {i.computation: i.skip for i in items if i.skip}
    assert "full tier" in skipped["compiled_merged_step"]
    assert [w.name for w in training.layer_ways_declared() if w.baseline] == ["merged_autograd_cl"]


@pytest.mark.parametrize("name", ["numba_cpu", "torch_roll", "merged_autograd_cl", "merged_autograd_nchw"])
def test_layer_forward_backward_is_verified(name):
    prepared = training.prepare_layer_training(_way(name), SMALL, torch.float32, "cpu")
    result = prepared.run()
    assert "gradient bound" in prepared.verify(result)
    row = prepared.row("checked")
    useful = 3 * training.useful_flops(SMALL.spec(), SMALL.input_shape)
    assert row.passes == "forward+backward" and row.useful_flops == useful
    assert row.flops == useful if name in implementations() else row.flops > useful  # a merged way's dense taps
    assert row.backward == (name if name in implementations() else "autograd")
    broken = list(result)
    broken[-1] = broken[-1].clone()
    broken[-1].view(-1)[broken[-1].abs().view(-1).argmax()] *= 1.01  # one tap of the last gradient, 1% off
    with pytest.raises(ResultMismatch, match="d/d"):
        prepared.verify(tuple(broken))


def test_a_wrong_backward_fails_the_layer_benchmarks_verification(monkeypatch):
    record = bad_backward_record("bad_backward_wrong_channel", wrong_channel=True)
    monkeypatch.setattr(layers, "_implementation", lambda name: record)
    way = training.LayerWay(record.name, Role.IMPLEMENTATION, "broken", record)
    prepared = training.prepare_layer_training(way, SMALL, torch.float32, "cpu")
    with pytest.raises(ResultMismatch, match="d/dweight"):
        prepared.verify(prepared.run())


def test_small_kernel_gradient_is_the_chain_rule_through_the_merge():
    """Mapping the merged kernels' gradients back gives the reference's small-kernel gradient
    (exact integers: both are the same sums)."""
    spec = SMALL.spec()
    x = torch.randint(-3, 4, SMALL.input_shape).double()
    w = torch.randint(-3, 4, (spec.channels * spec.nk, 1, spec.small_kernel, spec.small_kernel)).double()
    grads = training.Branches(*(torch.randint(-3, 4, SMALL.input_shape).double() for _ in "hvi"))
    merged = training.merged_step(SMALL, x, w, grads, "nchw")()
    want = training.reference_gradients(x, w, spec, grads)
    assert torch.equal(merged[0], want[0])
    assert torch.equal(training.small_kernel_gradient(w, spec, merged[1:]), want[1])


def _tiny_net(impl: str) -> torch.nn.Module:
    net = build_network("sw_tiny", impl, depths=(1, 1, 1, 1), dims=(8, 16, 16, 16), num_classes=10, seed=1)
    return training.randomize_for_check(net, 1).train()


def test_network_gradients_are_checked_against_the_reference_path(monkeypatch):
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([3])
    reference = layers.set_impl(_tiny_net("numba_cpu"), layers.REFERENCE)
    assert "parameter gradients" in training.verify_gradients(_tiny_net("numba_cpu"), reference, images, labels)
    record = bad_backward_record("bad_backward_wrong_channel", wrong_channel=True)
    real = layers._implementation
    monkeypatch.setattr(layers, "_implementation", lambda name: record if name == record.name else real(name))
    with pytest.raises(ModelMismatch, match="gradient of"):
        training.verify_gradients(layers.set_impl(_tiny_net("numba_cpu"), record.name), reference, images, labels)


def test_table7_has_a_training_column_and_training_ratios():
    def row(kind, network, computation, impl, batch, median, **extra):
        return {"kind": kind, "network": network, "computation": computation, "implementation": impl, "batch": batch,
                "median_s": median, "machine": "m", "params": 1e6, "threads": 2, **extra}  # fmt: skip

    frame = pd.DataFrame([
        row("model", "sw_tiny", "sw_tiny[numba_cpu]", "numba_cpu", 1, 0.5, gflop_per_image=1.0, sw_time_share=0.1),
        row("model", "unireplknet_tiny", "unireplknet_tiny", None, 1, 0.25, gflop_per_image=1.0, sw_time_share=0.1),
        row("training", "sw_tiny", "sw_tiny[numba_cpu]", "numba_cpu", 8, 4.0, backward="numba_cpu"),
        row("training", "unireplknet_tiny", "unireplknet_tiny", None, 8, 5.0, backward="reference"),
        row("training", "slak_tiny", "slak_tiny", None, 8, 10.0, backward="reference"),
    ])  # fmt: skip
    text = "\n".join(table7_section(frame))
    assert "| 2 (b8)" in text  # SW-tiny with numba_cpu: 8 images / 4 s, beside its inference row
    assert "#### Training, m, batch 8" in text
    assert "| SW-tiny / UniRepLKNet-T | 1.25 (SW: numba_cpu) |" in text  # 2 / 1.6 images/s
    assert "| SW-tiny / SLaK-T | 2.5 (SW: numba_cpu) |" in text  # 2 / 0.8
    only_training = "\n".join(table7_section(frame[frame["kind"] == "training"]))
    assert "#### Training, m, batch 8" in only_training


def test_training_rows_read_back():
    prepared = training.prepare_layer_training(_way("merged_autograd_nchw"), SMALL, torch.float32, "cpu")
    row = prepared.row("checked")
    back = type(row).from_extra_info(row.to_extra_info())
    assert back == row and dataclasses.asdict(back)["passes"] == "forward+backward"
