"""The reference against an independent literal port of the spec's formulas, and against the
official kernel's recorded forward results."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import ShiftwiseSpec, error_bound, merge_kernels, reference_forward

from tests.strategies import cases

OFFICIAL_VECTORS = Path(__file__).resolve().parent / "data" / "official.json"  # see tests/data/README.md


def literal_sw(x: np.ndarray, weight: np.ndarray, spec: ShiftwiseSpec):
    """Stage 1 and stage 2 exactly as written in the spec, with loops (slow, obvious)."""
    b, c, h, w = x.shape
    k, p, e, nk = spec.small_kernel, spec.padding, spec.extra_pad, spec.nk
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    y = np.zeros((b, c * nk, h + 2 * e, w + 2 * e))
    for ch in range(c):
        for j in range(nk):
            for u in range(k):
                for v in range(k):
                    y[:, ch * nk + j] += weight[ch * nk + j, 0, u, v] * xp[:, ch, u : u + h + 2 * e, v : v + w + 2 * e]

    def read(row, col, flat):
        inside = 0 <= row < h + 2 * e and 0 <= col < w + 2 * e
        return y[:, flat, row, col] if inside else 0.0

    out = np.zeros((3, b, c, h, w))
    s = spec.shifts
    for ch in range(c):
        for i in range(h):
            for xx in range(w):
                for g in range(spec.groups):
                    for j in range(nk):
                        if spec.active[ch, j]:
                            out[0, :, ch, i, xx] += read(i + e, xx - s[spec.slot_h[g, ch, j]], ch * nk + j)
                            out[1, :, ch, i, xx] += read(i - s[spec.slot_v[g, ch, j]], xx + e, ch * nk + j)
                    if spec.active[ch, spec.ident[g, ch]]:
                        out[2, :, ch, i, xx] += read(i + e, xx + e, ch * nk + spec.ident[g, ch])
    return out


@given(cases(max_big_kernel=15), st.sampled_from([torch.float64, torch.float32]))
def test_reference_equals_the_literal_formulas(case, dtype):
    spec = case.spec()
    generator = torch.Generator().manual_seed(case.seed)
    x = torch.randint(-3, 4, case.input_shape, generator=generator).to(dtype)
    weight = torch.randint(-2, 3, spec.weight_shape, generator=generator).to(dtype)
    expected = literal_sw(x.double().numpy(), weight.double().numpy(), spec)
    for branch, got in enumerate(reference_forward(x, weight, spec)):
        assert got.dtype == dtype and got.shape == x.shape
        np.testing.assert_array_equal(got.double().numpy(), expected[branch])


@pytest.mark.parametrize("entry", json.loads(OFFICIAL_VECTORS.read_text())["forward"], ids=["M13k3", "M7k5"])
def test_reference_reproduces_the_official_kernel(entry):
    spec = ShiftwiseSpec.official(
        big_kernel=entry["big_kernel"], small_kernel=entry["small_kernel"],
        channels=entry["channels"], groups=entry["groups"],
    )  # fmt: skip
    x = torch.tensor(entry["x"], dtype=torch.float64)
    weight = torch.tensor(entry["weight"], dtype=torch.float64)
    for got, name in zip(reference_forward(x, weight, spec), "hvi"):
        assert torch.equal(got, torch.tensor(entry[name], dtype=torch.float64)), name


@pytest.mark.parametrize(
    "big, small, left, right",
    [(49, 3, 24, 26), (47, 3, 23, 24), (13, 3, 6, 8), (51, 3, 25, 25), (51, 5, 25, 29), (7, 5, 3, 6)],
)
def test_merged_kernels_have_the_asymmetric_extent(big, small, left, right):
    """Kernel j alone at the last slot: its last tap sits at offset +right, not +M//2."""
    spec = ShiftwiseSpec.random(big_kernel=big, small_kernel=small, channels=1, groups=1, seed=0)
    nk = spec.nk
    assert nk * small == left + right + 1
    weight = torch.zeros(spec.weight_shape, dtype=torch.float64)
    last = int(np.argmax(spec.slot_h[0, 0] == nk - 1))
    weight[last, 0, small // 2, small - 1] = 1.0  # rightmost tap of the kernel at the last slot
    kernels = merge_kernels(weight, spec)
    assert kernels.h.shape == (1, 1, small, nk * small) and kernels.v.shape == (1, 1, nk * small, small)
    assert kernels.h[0, 0, small // 2, -1] == 1.0
    # An impulse input: the output is the kernel mirrored, so that tap shows up at x = -right.
    x = torch.zeros(1, 1, 1, 2 * right + 1, dtype=torch.float64)
    x[..., right] = 1.0
    h = reference_forward(x, weight, spec).h
    assert h[0, 0, 0, 0] == 1.0 and h.sum() == 1.0


def test_vertical_kernel_stacks_small_kernels_without_transposing_them():
    spec = ShiftwiseSpec.random(big_kernel=7, small_kernel=3, channels=1, groups=1, seed=1)
    weight = torch.arange(27, dtype=torch.float64).reshape(spec.weight_shape)
    kernels = merge_kernels(weight, spec)
    for j in range(spec.nk):
        t = spec.slot_v[0, 0, j]
        assert torch.equal(kernels.v[0, 0, 3 * t : 3 * t + 3, :], weight[j, 0])
        t = spec.slot_h[0, 0, j]
        assert torch.equal(kernels.h[0, 0, :, 3 * t : 3 * t + 3], weight[j, 0])


def test_pruned_weights_never_reach_the_reference():
    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=3, groups=2).pruned(0.4, seed=2)
    weight = torch.randn(spec.weight_shape, dtype=torch.float64)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    clean = reference_forward(x, weight, spec)
    weight.view(3, spec.nk, 9)[torch.as_tensor(~spec.active)] = float("nan")
    for got, want in zip(reference_forward(x, weight, spec), clean):
        assert torch.equal(got, want)


def test_reference_is_differentiable():
    spec = ShiftwiseSpec.random(big_kernel=9, small_kernel=3, channels=2, groups=2, seed=0)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(spec.weight_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: tuple(reference_forward(a, b, spec)), (x, weight))


@given(cases(max_big_kernel=31))
def test_error_bound_holds_for_the_float32_reference(case):
    """The bound is a theorem: the float32 reference (one summation order) must satisfy it."""
    spec = case.spec()
    generator = torch.Generator().manual_seed(case.seed)
    x = torch.randn(case.input_shape, generator=generator, dtype=torch.float64).float()
    weight = torch.randn(spec.weight_shape, generator=generator, dtype=torch.float64).float()
    exact = reference_forward(x.double(), weight.double(), spec)
    approx = reference_forward(x, weight, spec)
    for got, want, bound in zip(approx, exact, error_bound(x.double(), weight.double(), spec, torch.float32)):
        assert ((got.double() - want).abs() <= bound).all()


def test_error_bound_is_tight_enough_to_see_float16():
    """Rounding inputs to float16 alone must break the float32 bound somewhere."""
    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=4, groups=4)
    x = torch.randn(2, 4, 10, 10, dtype=torch.float64)
    weight = torch.randn(spec.weight_shape, dtype=torch.float64)
    exact = reference_forward(x, weight, spec)
    rounded = reference_forward(x.half().double(), weight.half().double(), spec)
    bound = error_bound(x, weight, spec, torch.float32)
    assert all(((r - e).abs() > b).any() for r, e, b in zip(rounded, exact, bound))
