"""Caches keyed on what they depend on: an edited kernel file is rebuilt, another implementations
folder is looked up afresh."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cudac import host_compiler, load_module

ROOT = Path(__file__).resolve().parents[1]
KERNEL = 'extern "C" __global__ void fill(int* out) {{ out[threadIdx.x] = {value}; }}\n'


@pytest.mark.skipif(host_compiler() is None, reason="no C++ compiler for the host build")
def test_an_edited_cu_file_is_rebuilt(tmp_path):
    source = tmp_path / "fill.cu"
    results = []
    for value in (1, 2):
        source.write_text(KERNEL.format(value=value))
        os.utime(source, ns=(value * 10**9, value * 10**9))  # a new version, whatever the clock's resolution
        out = torch.zeros(4, dtype=torch.int32)
        load_module(source, "cpu").launch("fill", (1,), (4,), out.data_ptr())
        results.append(out.tolist())
    assert results == [[1] * 4, [2] * 4]
    assert load_module(source, "cpu") is load_module(source, "cpu")  # unchanged: built once


def test_the_layer_s_implementation_lookup_follows_sw_impls_dir(tmp_path, monkeypatch):
    from harness.models.layers import _implementation

    impls = tmp_path / "impls"
    impls.mkdir()
    shutil.copy(ROOT / "impls" / "torch_roll.py", impls)
    default = _implementation("torch_roll")
    monkeypatch.setenv("SW_IMPLS_DIR", str(impls))
    moved = _implementation("torch_roll")
    assert moved.source == impls / "torch_roll.py" and default.source != moved.source
    monkeypatch.setenv("SW_IMPLS_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="unknown SW implementation 'torch_roll'"):
        _implementation("torch_roll")


def test_the_reference_is_evaluated_once_per_input_bits_and_afresh_for_new_bits():
    """``References`` (the benchmarks' shared float64 evaluations) gives what ``expected_result``
    computes, once per content: another tensor with the same bits shares it, the same tensor
    refilled in place (the integrity probe's -x) gets its own, and the oldest entry goes first."""
    from harness.cases import Case
    from harness.checking import CheckCase, References, expected_result, make_inputs

    case = Case("t", 7, 3, 4, 2, 1, 8, 9, tables="random", seed=3, sparsity=0.3, suite="unit")
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    x, weight, spec = inputs.x, inputs.weight, case.spec()
    references = References(size=2)
    first = references.expected(x, weight, spec, exact=False)
    assert references.expected(x.clone(), weight.clone(), case.spec(), exact=False) is first and references.evaluations == 1
    direct = expected_result(x, weight, spec, exact=False)
    assert all(torch.equal(a, b) for a, b in zip(first.branches + first.bounds, direct.branches + direct.bounds))
    x.neg_()  # refilled in place: new bits, a new evaluation of the new content
    negated = references.expected(x, weight, spec, exact=False)
    assert references.evaluations == 2 and torch.equal(negated.branches.h, -first.branches.h)
    assert references.expected(x, weight, spec, exact=True).bounds is None and references.evaluations == 3
    x.neg_()
    assert references.expected(x, weight, spec, exact=False) is not first and references.evaluations == 4  # evicted (size 2)
    other = Case("t", 7, 3, 4, 2, 1, 8, 9, tables="random", seed=4, sparsity=0.3, suite="unit").spec()
    assert not np.array_equal(other.slot_h, spec.slot_h)
    references.expected(x, weight, other, exact=False)
    assert references.evaluations == 5  # other tables, same sizes and inputs: not the same reference
    with pytest.raises(ValueError, match="at least one entry, got size=0"):
        References(size=0)
