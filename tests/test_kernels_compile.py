"""Every CUDA C source of the project builds with NVRTC for sm_80 and sm_90, without a GPU,
and no kernel spills."""

from pathlib import Path

import pytest

from harness import implementations
from harness.cudac import ARCHITECTURES, CudaSource, compile_cuda, nvrtc_unavailable_reason, parse_ptxas_log
from harness.cudac.estimate import GPUS, lower_bound
from harness.cudac.kernel_table import estimate_table, kernel_table
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
    assert {"cuda_atomic", "cupy_fused", "cupy_onepass", "numba_shared", "triton_sw"} <= set(WITH_KERNELS)


def test_onepass_meets_the_targets_on_paper():
    """Issue #16's targets for the one-pass kernel on SW-tiny's stages at batch 64: executed
    FLOPs <= 1.05x useful, DRAM bytes <= 1.1x compulsory, theoretical occupancy >= 50% on
    sm_80 and sm_90, no spills, and at least one FFMA per 2 instructions in the conv loop."""
    frame, errors = kernel_table([implementations()["cupy_onepass"]])
    assert not errors
    assert sorted(set(frame["case"])) == ["tiny-s1-b64", "tiny-s2-b64", "tiny-s3-b64", "tiny-s4-b64"]
    assert set(frame["arch"]) == set(ARCHITECTURES) and (frame["occupancy"] >= 0.5).all()
    assert (frame[["spill_stores", "spill_loads", "sass_LOCAL"]] == 0).all().all()
    assert (frame["loop_FFMA"] / frame["loop_total"] >= 0.5).all()
    estimates = estimate_table(frame)
    assert (estimates["x useful"] <= 1.05).all() and (estimates["x compulsory"] <= 1.1).all()


def test_kernels_table_has_launches_and_estimates_for_every_gpu_implementation():
    frame, errors = kernel_table([implementations()[name] for name in WITH_KERNELS])
    assert not errors
    launched = frame[frame["case"] != ""]
    assert set(launched["implementation"]) == set(WITH_KERNELS)
    assert (launched["blocks_per_sm"] > 0).all() and launched["dynamic_shared_bytes"].notna().all()
    estimates = estimate_table(frame)
    assert len(estimates) == 4 * len(WITH_KERNELS)
    assert (estimates[["A100 estimate (us)", "H100 estimate (us)"]] > 0).all().all()


def test_a_kernel_launched_at_a_stage_by_two_builds_is_refused():
    """The estimates add up a stage's launches: two builds of one kernel (autotuning configs)
    both launched at a stage would count its work twice."""
    import dataclasses

    impl = implementations()["cuda_atomic"]
    (scatter,) = [f for f in impl.kernel_figures("sm_80") if f.launches]
    twice = [dataclasses.replace(scatter, build="a"), dataclasses.replace(scatter, build="b", launches=scatter.launches[:1])]
    fake = dataclasses.replace(impl, kernel_figures=lambda arch: twice)
    frame, errors = kernel_table([fake], archs=["sm_80"])
    assert frame.empty and "launched at tiny-s1-b64 by two builds, 'a' and 'b'" in errors["cuda_atomic"]
    once = [dataclasses.replace(scatter, build="a", launches=scatter.launches[1:]), twice[1]]
    frame, errors = kernel_table([dataclasses.replace(impl, kernel_figures=lambda arch: once)], archs=["sm_80"])
    assert not errors and len(frame) == len(scatter.launches)


def test_lower_bound_is_the_largest_of_its_four_bounds():
    a100 = GPUS[0]
    assert lower_bound(a100, 2039e9, 0, 0, 0) == (1.0, "DRAM")
    assert lower_bound(a100, 1, 19.5e12 * 2, 0, 0) == (2.0, "FP32")
    seconds, bound = lower_bound(a100, 1, 1, 108 * 4 * 1.41e9 * 3, 108 * 1.41e9)
    assert bound == "issue" and abs(seconds - 3) < 1e-9


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
