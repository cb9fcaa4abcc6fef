"""The host emulation of CUDA C kernels runs them faithfully, and refuses what it cannot."""

from pathlib import Path

import pytest
import torch

from harness.cudac import CudaSource, HostEmulationError, load_module, unsupported_features

PROBES = Path(__file__).parent / "cuda" / "emulation_probes.cu"
SHUFFLES = Path(__file__).parent / "cuda" / "uses_shuffles.cu"


@pytest.fixture(scope="module")
def probes():
    return load_module(PROBES, "cpu")


def test_every_thread_of_a_3d_grid_runs_once_with_its_own_indices(probes):
    grid, block = (2, 3, 2), (4, 2, 3)
    out = torch.full((12 * 24,), -1, dtype=torch.int64)
    probes.launch("write_ids", grid, block, out.data_ptr())
    assert torch.equal(out, torch.arange(out.numel()))


def test_atomic_add_is_atomic_across_concurrent_blocks(probes):
    values = torch.randint(0, 1000, (200_000,), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    bins = torch.zeros(7, dtype=torch.int32)
    probes.launch("histogram", (-(-values.numel() // 128),), (128,), values.data_ptr(), values.numel(), bins.data_ptr(), 7)
    assert torch.equal(bins.long(), torch.bincount(values.long() % 7, minlength=7))


def test_syncthreads_is_a_real_barrier_and_shared_memory_is_per_block(probes):
    assert probes.fiber_mode
    x = torch.randint(-50, 50, (6 * 256,), generator=torch.Generator().manual_seed(1)).float()
    sums = torch.zeros(6)
    probes.launch("block_sums", (6,), (256,), x.data_ptr(), sums.data_ptr())
    assert torch.equal(sums, x.view(6, 256).sum(dim=1))


def test_divergent_barriers_are_reported_not_hung(probes):
    x = torch.zeros(64)
    with pytest.raises(HostEmulationError, match=r"block [01]: divergent __syncthreads"):
        probes.launch("divergent_barrier", (2,), (32,), x.data_ptr())


def test_unsupported_features_are_refused():
    assert unsupported_features(CudaSource.read(SHUFFLES)) == ["warp shuffles (__shfl_down_sync)"]
    with pytest.raises(HostEmulationError, match="does not model: warp shuffles"):
        load_module(SHUFFLES, "cpu")


@pytest.mark.parametrize(
    "text, what",
    [
        ("__syncwarp();", "warp-level execution"),
        ("__threadfence();", "memory fences"),
        ('asm("mov.u32 %0, %%laneid;" : "=r"(x));', "inline PTX"),
        ("atomicCAS(p, 0, 1);", "atomics other than atomicAdd"),
        ("int b = __ballot_sync(~0u, 1);", "warp votes"),
    ],
)
def test_each_unmodelled_feature_is_named(tmp_path, text, what):
    path = tmp_path / "k.cu"
    path.write_text(f'extern "C" __global__ void k(int* p) {{ int x; {text} }}\n')
    assert any(what in found for found in unsupported_features(CudaSource.read(path)))


def test_dynamic_shared_memory_is_per_launch_and_per_block(probes):
    x = torch.randint(-50, 50, (5 * 64,), generator=torch.Generator().manual_seed(2)).double()
    sums = torch.zeros(5, dtype=torch.float64)
    probes.launch("block_sums_dynamic", (5,), (64,), x.data_ptr(), sums.data_ptr(), shared_bytes=64 * 8)
    assert torch.equal(sums, x.view(5, 64).sum(dim=1))
    with pytest.raises(ValueError, match=r"dynamic shared memory must be in 0..49152 bytes, got 50000"):
        probes.launch("block_sums_dynamic", (5,), (64,), x.data_ptr(), sums.data_ptr(), shared_bytes=50000)


def test_dynamic_shared_memory_outside_a_kernel_is_refused(tmp_path):
    path = tmp_path / "k.cu"
    path.write_text('extern __shared__ float s[];\nextern "C" __global__ void k(float* p) { p[0] = s[0]; }\n')
    assert unsupported_features(CudaSource.read(path)) == [
        "dynamic shared memory declared outside a kernel (extern __shared__ float s[];)"
    ]


def test_launch_limits_match_cuda(probes):
    out = torch.zeros(2048, dtype=torch.int64)
    with pytest.raises(ValueError, match="more than 1024 threads"):
        probes.launch("write_ids", (1,), (64, 32), out.data_ptr())
    with pytest.raises(ValueError, match=r"grid dimension y must be in 1..65535"):
        probes.launch("write_ids", (1, 70000), (1,), out.data_ptr())
    with pytest.raises(TypeError, match="takes 1 arguments, got 2"):
        probes.launch("write_ids", (1,), (1,), out.data_ptr(), 3)
    with pytest.raises(KeyError, match="has no kernel 'nope'"):
        probes.launch("nope", (1,), (1,))


def test_kernel_signatures_are_read_from_the_source():
    source = CudaSource.read(PROBES)
    histogram = source.kernels["histogram"]
    assert [(p.ctype, p.name) for p in histogram.params] == [
        ("int*", "values"), ("long long", "n"), ("int*", "bins"), ("int", "nbins"),
    ]  # fmt: skip


def test_unsupported_parameter_types_are_refused(tmp_path):
    path = tmp_path / "k.cu"
    path.write_text('extern "C" __global__ void k(float2 v) {}\n')
    with pytest.raises(ValueError, match="parameter 'float2 v' has an unsupported type"):
        CudaSource.read(path)
