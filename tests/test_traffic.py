"""Byte and move counts, against counts made independently with loops."""

import sys

import pytest
import torch
from hypothesis import given

from harness import ShiftwiseSpec, implementations
from harness.traffic import compulsory_bytes, conv_output_elements, scatter_moves

from tests.strategies import cases


def literal_scatter_moves(spec: ShiftwiseSpec, shape) -> int:
    """Walk every y element and every target, as the atomicAdd kernel does."""
    batch, channels, height, width = shape
    e, s = spec.extra_pad, spec.shifts
    moves = 0
    for c in range(channels):
        for j in range(spec.nk):
            if not spec.active[c, j]:
                continue
            for a in range(height + 2 * e):
                for q in range(width + 2 * e):
                    row, col = a - e, q - e
                    for g in range(spec.groups):
                        moves += 0 <= row < height and 0 <= q + s[spec.slot_h[g, c, j]] < width
                        moves += 0 <= col < width and 0 <= a + s[spec.slot_v[g, c, j]] < height
                        moves += 0 <= row < height and 0 <= col < width and spec.ident[g, c] == j
    return batch * moves


@given(cases(max_big_kernel=15))
def test_scatter_moves_match_a_literal_count(case):
    spec = case.spec()
    assert scatter_moves(spec, case.input_shape) == literal_scatter_moves(spec, case.input_shape)


def test_compulsory_bytes_by_hand():
    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=2, groups=4)  # nk = 5
    shape = (3, 2, 7, 9)
    x = outputs = 3 * 2 * 7 * 9
    weights = 2 * 5 * 9
    tables = 4 * (2 * 5 * 8) + 4 * (2 * 4) + 2 * 5  # pad_hv, idx_identit (int32), active (bytes)
    assert compulsory_bytes(spec, shape, 4) == 4 * (x + weights + 3 * outputs) + tables
    assert conv_output_elements(spec, shape) == 3 * 2 * 5 * 9 * 11


def test_atomic_traffic_exceeds_compulsory_by_the_conv_output_and_the_moves():
    impl = implementations()["cuda_atomic"]
    spec = ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=60, groups=4)
    shape = (1, 60, 56, 56)
    extra = impl.traffic(spec, shape, 4) - compulsory_bytes(spec, shape, 4)
    y = conv_output_elements(spec, shape)
    assert extra == 4 * (2 * y + 3 * 60 * 56 * 56 + 2 * scatter_moves(spec, shape))
    # nk-times larger intermediate, written and read: this form moves many times the compulsory bytes
    assert impl.traffic(spec, shape, 4) > 20 * compulsory_bytes(spec, shape, 4)


def test_atomic_launch_refuses_grids_past_its_limit():
    module = sys.modules[implementations()["cuda_atomic"].fn.__module__]
    spec = ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=4096, groups=4)
    huge = (2**13, 4096 * spec.nk, 2**9, 2**9)  # never allocated: refused from the shape alone
    with pytest.raises(ValueError, match="exceed the .* this launch covers"):
        module._launch("sw_scatter_f32", spec, huge, [], torch.device("cpu"))


def literal_fused_input_reads(spec: ShiftwiseSpec, shape, tile: int) -> int:
    """Walk the staging loops of cupy_fused.cu and count the in-map input elements read."""
    batch, channels, height, width = shape
    k, p = spec.small_kernel, spec.small_kernel - 1
    reads = 0
    for i in range(height):  # rows kernel: xs[u][col] = x[i - k/2 + u][col - p]
        for u in range(k):
            for col in range(width + 2 * p):
                reads += 0 <= i - k // 2 + u < height and 0 <= col - p < width
    for x0 in range(0, width, tile):  # columns kernel: xs[a][t] = x[a - p][x0 - k/2 + t]
        for a in range(height + 2 * p):
            for t in range(tile + k - 1):
                reads += 0 <= a - p < height and 0 <= x0 - k // 2 + t < width
    return batch * channels * reads


@given(cases(max_big_kernel=15))
def test_fused_traffic_counts_the_tiles_reads(case):
    impl = implementations()["cupy_fused"]
    module = sys.modules[impl.fn.__module__]
    spec, shape = case.spec(), case.input_shape
    tile = module.launch_plan(spec, shape, 4)["tile"]
    batch, channels, height, width = shape
    x_once = batch * channels * height * width
    expected = compulsory_bytes(spec, shape, 4) + 4 * (literal_fused_input_reads(spec, shape, tile) - x_once)
    assert impl.traffic(spec, shape, 4) == expected


def test_traffic_orders_the_gpu_designs_on_sw_tiny():
    """Fused moves least, the shared-memory gather less than the atomic scatter."""
    from harness.cases import load_cases

    impls = implementations()
    for case in load_cases(suites=["sw_tiny"]):
        spec, shape = case.spec(), case.input_shape
        fused, shared, atomic = (impls[name].traffic(spec, shape, 4) for name in ("cupy_fused", "numba_shared", "cuda_atomic"))
        assert compulsory_bytes(spec, shape, 4) < fused < shared < atomic, case.name
        assert atomic > 5 * fused, case.name
