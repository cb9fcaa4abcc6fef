"""Every CUDA C source of the project builds with NVRTC for sm_80 and sm_90, without a GPU,
and no kernel spills."""

from pathlib import Path

import pytest

from harness import implementations
from harness.cudac import ARCHITECTURES, CudaSource, compile_cuda, nvrtc_unavailable_reason
from harness.cudac.nvrtc import parse_ptxas_log
from harness.registry import DEFAULT_IMPLS_DIR

SOURCES = sorted(DEFAULT_IMPLS_DIR.glob("*.cu")) + sorted((Path(__file__).parent / "cuda").glob("*.cu"))
WITH_KERNELS = sorted(name for name, impl in implementations().items() if impl.kernel_figures is not None)


def test_nvrtc_is_usable_here():
    assert nvrtc_unavailable_reason() is None


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_compiles_without_spills(path, arch):
    source = CudaSource.read(path)
    compiled = compile_cuda(source, arch)
    assert set(compiled.figures) == set(source.kernels)
    assert compiled.cubin[:4] == b"\x7fELF"
    for figures in compiled.figures.values():
        assert figures.registers > 0
        assert (figures.spill_stores, figures.spill_loads) == (0, 0), figures


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("name", WITH_KERNELS)
def test_implementation_kernels_build_without_spills(name, arch):
    figures = implementations()[name].kernel_figures(arch)
    assert figures and all(f.arch == arch and f.registers > 0 for f in figures)
    assert [(f.kernel, f.spill_stores, f.spill_loads) for f in figures] == [(f.kernel, 0, 0) for f in figures]


def test_gpu_implementations_declare_their_kernels():
    assert {"cuda_atomic", "numba_shared"} <= set(WITH_KERNELS)


def test_the_atomic_kernels_are_all_there():
    assert set(CudaSource.read(DEFAULT_IMPLS_DIR / "cuda_atomic.cu").kernels) == {
        "sw_scatter_f32", "sw_scatter_f64", "sw_gather_adjoint_f32", "sw_gather_adjoint_f64",
    }  # fmt: skip


def test_ptxas_log_parsing():
    log = (
        "ptxas info    : 0 bytes gmem\n"
        "ptxas info    : Compiling entry function 'a' for 'sm_80'\n"
        "ptxas info    : Function properties for a\n"
        "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 380 bytes cmem[0]\n"
        "ptxas info    : Compiling entry function 'b' for 'sm_80'\n"
        "ptxas info    : Function properties for b\n"
        "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 12 registers, used 0 barriers\n"
    )
    figures = parse_ptxas_log(log, "sm_80")
    a, b = figures["a"], figures["b"]
    assert (a.registers, a.barriers, a.shared_bytes, a.constant_bytes) == (40, 1, 2048, 380)
    assert (a.stack_bytes, a.spill_stores, a.spill_loads) == (8, 4, 12)
    assert (b.registers, b.shared_bytes, b.spill_stores, b.constant_bytes) == (12, 0, 0, None)
    assert parse_ptxas_log(log, "sm_90") == {}
