"""The occupancy calculator against NVIDIA's own: ``cuda_occupancy.h`` from the
nvidia-cuda-runtime wheel, compiled here as plain C++ (it needs no GPU), on a grid of block
sizes, register counts and shared memory sizes; and against the CUDA C++ Best Practices
Guide's worked example."""

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cudac.occupancy import ARCH, occupancy

PROGRAM = r"""
#include <cstdio>
#include "cuda_occupancy.h"
int main() {
    char arch[8]; int threads, regs; long shared;
    while (std::scanf("%7s %d %d %ld", arch, &threads, &regs, &shared) == 4) {
        cudaOccDeviceProp p;
        p.computeMajor = arch[3] - '0'; p.computeMinor = arch[4] - '0';
        p.maxThreadsPerBlock = 1024; p.maxThreadsPerMultiprocessor = 2048;
        p.regsPerBlock = 65536; p.regsPerMultiprocessor = 65536; p.warpSize = 32;
        p.sharedMemPerBlock = 48 * 1024; p.numSms = 108; p.reservedSharedMemPerBlock = 1024;
        p.sharedMemPerMultiprocessor = (p.computeMajor == 9 ? 228 : 164) * 1024;
        p.sharedMemPerBlockOptin = (p.computeMajor == 9 ? 227 : 163) * 1024;
        cudaOccFuncAttributes a;
        a.maxThreadsPerBlock = 1024; a.numRegs = regs; a.sharedSizeBytes = 0;
        a.shmemLimitConfig = FUNC_SHMEM_LIMIT_OPTIN; a.maxDynamicSharedSizeBytes = shared; a.numBlockBarriers = 1;
        cudaOccDeviceState s;
        cudaOccResult r;
        cudaOccError e = cudaOccMaxActiveBlocksPerMultiprocessor(&r, &p, &a, &s, threads, shared);
        std::printf("%d\n", e == CUDA_OCC_SUCCESS ? r.activeBlocksPerMultiprocessor : -1);
    }
}
"""


def _header() -> Path | None:
    try:
        import nvidia.cu13 as wheel  # the CUDA 13 wheels' shared namespace
    except ImportError:
        return None
    for root in wheel.__path__:
        if (Path(root) / "include" / "cuda_occupancy.h").exists():
            return Path(root) / "include"
    return None


GRID = list(itertools.product(
    ARCH, (32, 64, 96, 128, 196, 256, 320, 392, 448, 512, 640, 784, 1024), (16, 32, 37, 40, 48, 56, 64, 80, 96, 128, 168, 255),
    (0, 1000, 8192, 28672, 49152, 70000, 100000, 160000, 200000),
))  # fmt: skip


@pytest.mark.skipif(_header() is None or shutil.which("g++") is None, reason="needs cuda_occupancy.h and g++")
def test_matches_cuda_occupancy_header(tmp_path):
    source, binary = tmp_path / "occ.cpp", tmp_path / "occ"
    source.write_text(PROGRAM)
    subprocess.run(["g++", "-O1", f"-I{_header()}", str(source), "-o", str(binary)], check=True)
    lines = "".join(f"{a} {t} {r} {s}\n" for a, t, r, s in GRID)
    expected = [int(v) for v in subprocess.run([str(binary)], input=lines, capture_output=True, text=True, check=True).stdout.split()]
    ours = [occupancy(a, t, r, s).blocks_per_sm for a, t, r, s in GRID]
    mismatches = [(g, e, o) for g, e, o in zip(GRID, expected, ours) if e != max(o, 0) and not (e == -1 and o == 0)]
    assert len(expected) == len(GRID) and not mismatches, mismatches[:10]


def test_best_practices_guide_register_example():
    # "a kernel with 128-thread blocks using 37 registers per thread results in an occupancy of
    # 75% with 12 active 128-thread blocks per multi-processor, whereas a kernel with 320-thread
    # blocks using the same 37 registers per thread [...] only four 320-thread blocks can reside"
    # (stated for compute capability 7.0, whose register file and rules sm_80 shares).
    small, large = occupancy("sm_80", 128, 37), occupancy("sm_80", 320, 37)
    assert (small.blocks_per_sm, small.fraction, small.limiter) == (12, 0.75, "registers")
    assert (large.blocks_per_sm, large.warps_per_sm) == (4, 40)


def test_shared_memory_limits_and_refusals():
    # 28 KiB + 1 KiB reserved: 5 blocks in sm_80's 164 KiB, 7 in sm_90's 228 KiB.
    assert occupancy("sm_80", 128, 32, 28 * 1024).blocks_per_sm == 5
    assert occupancy("sm_90", 128, 32, 28 * 1024).blocks_per_sm == 7
    assert occupancy("sm_80", 128, 32, 164 * 1024).blocks_per_sm == 0  # over the opt-in maximum
    assert occupancy("sm_80", 1024, 255).blocks_per_sm == 0  # more registers than a block may have
    assert occupancy("sm_90", 32, 16).limiter == "blocks"  # 32 one-warp blocks
    with pytest.raises(ValueError, match="1..1024 threads"):
        occupancy("sm_80", 2048, 32)
