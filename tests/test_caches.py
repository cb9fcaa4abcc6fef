"""Caches keyed on what they depend on: an edited kernel file is rebuilt, another implementations
folder is looked up afresh."""

import os
import shutil
from pathlib import Path

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
