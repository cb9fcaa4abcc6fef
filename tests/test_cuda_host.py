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
    with pytest.raises(ValueError, match=r"dynamic shared memory must be in 0..49152 bytes, got 50000 \(without opting in"):
        probes.launch("block_sums_dynamic", (5,), (64,), x.data_ptr(), sums.data_ptr(), shared_bytes=50000)
    sums.zero_()  # opted in, as a GPU launcher does past 48 KiB: up to sm_80's 163 KiB
    probes.launch("block_sums_dynamic", (5,), (64,), x.data_ptr(), sums.data_ptr(), shared_bytes=50000, opt_in=True)
    assert torch.equal(sums, x.view(5, 64).sum(dim=1))
    with pytest.raises(ValueError, match=r"must be in 0..166912 bytes, got 200000$"):
        probes.launch("block_sums_dynamic", (5,), (64,), x.data_ptr(), sums.data_ptr(), shared_bytes=200000, opt_in=True)


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


def test_shared_declarations_become_per_block_allocations_on_the_same_lines(tmp_path):
    """Every readable ``__shared__`` declaration is rewritten in place (line numbers kept, for
    the sanitizers' reports); one it cannot read, or one outside a function, is refused."""
    from harness.cudac.host import _host_source

    text = (
        "template <typename T, int N> __device__ void f() {\n"
        "    static __shared__ __align__(16) T tile[N][N + 1];\n"
        "    __shared__ unsigned int\n        count;\n"
        "    extern __shared__ float dynamic[];\n"
        "}\n"
    )
    host = _host_source(text)
    assert host.count("\n") == text.count("\n")
    assert "auto& tile = ::swemu::shared_static<T [N][N+1], 16>([] {});" in host
    assert "auto& count = ::swemu::shared_static<unsigned int, 0>([] {});" in host
    assert "float* dynamic = reinterpret_cast<float*>(::swemu::dynamic_shared);" in host
    path = tmp_path / "k.cu"
    path.write_text('__shared__ float s[4];\nextern "C" __global__ void k(float* p) { __shared__ float a[2], b[2]; }\n')
    assert unsupported_features(CudaSource.read(path)) == [
        "__shared__ memory declared outside a function (__shared__ float s[4];)",
        "a __shared__ declaration it cannot read (__shared__ float a[2], b[2];)",
    ]


def test_shared_memory_is_poisoned_not_zeroed(tmp_path):
    path = tmp_path / "k.cu"
    path.write_text(
        'extern "C" __global__ void k(float* out) {\n'
        "    __shared__ float s[4];\n    extern __shared__ double d[];\n"
        "    out[threadIdx.x] = s[threadIdx.x];\n    out[4 + threadIdx.x] = (float)d[threadIdx.x];\n}\n"
    )
    out = torch.zeros(8)
    load_module(path, "cpu").launch("k", (1,), (4,), out.data_ptr(), shared_bytes=4 * 8)
    assert out.isnan().all(), out


def test_pointer_to_const_parameters_are_known():
    params = CudaSource.read(PROBES).kernels["histogram"].params
    assert [p.const for p in params] == [True, False, False, False]
