"""Lower-bound time ESTIMATES for an A100 and an H100, from counts alone (no GPU, nothing measured).

time >= max(DRAM bytes / DRAM bandwidth, executed FLOPs / FP32 peak,
            issued warp instructions / (SMs x 4 schedulers x clock),
            shared-memory warp accesses / (SMs x 1 per clock))

DRAM bytes come from the implementation's traffic model, FLOPs from the multiply-adds and
additions it executes, instructions from those work instructions times the instructions (and
shared-memory wavefronts) per work instruction in the SASS loops that do them, plus the
instructions outside loops on the shortest entry-to-exit path once per warp, with full warps
and no bank conflicts assumed. Every simplification makes the estimate smaller: it is a floor,
not a prediction; the real time of a kernel is larger (latency, tails, launch overhead).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    arch: str
    sms: int
    clock_ghz: float  # boost clock
    fp32_tflops: float  # dense FP32 (FFMA counted as 2)
    dram_gbps: float
    schedulers: int = 4  # warp instructions issued per clock per SM
    shared_per_clock: int = 1  # 32-bit warp-wide shared-memory accesses per clock per SM (128 B/clk)

    @property
    def issue_per_s(self) -> float:
        return self.sms * self.schedulers * self.clock_ghz * 1e9

    @property
    def shared_per_s(self) -> float:
        return self.sms * self.shared_per_clock * self.clock_ghz * 1e9


#: Datasheet figures: A100-SXM4-80GB (the paper's GPU), H100 SXM5 80GB.
GPUS = (
    Gpu("A100", "sm_80", sms=108, clock_ghz=1.41, fp32_tflops=19.5, dram_gbps=2039),
    Gpu("H100", "sm_90", sms=132, clock_ghz=1.98, fp32_tflops=66.9, dram_gbps=3352),
)

BOUNDS = ("DRAM", "FP32", "issue", "shared")


def lower_bound(gpu: Gpu, dram_bytes: float, flops: float, warp_instructions: float, shared_accesses: float) -> tuple[float, str]:
    """(seconds, binding bound) of the estimate for one GPU."""
    times = {
        "DRAM": dram_bytes / (gpu.dram_gbps * 1e9),
        "FP32": flops / (gpu.fp32_tflops * 1e12),
        "issue": warp_instructions / gpu.issue_per_s,
        "shared": shared_accesses / gpu.shared_per_s,
    }
    bound = max(times, key=times.get)
    return times[bound], bound


DERIVATION = (
    "Estimates, not measurements: lower bounds max(DRAM bytes / bandwidth, executed FLOPs / FP32 peak, "
    "issued warp instructions / (SMs x 4 x clock), shared-memory wavefronts (128 B each) / (SMs x clock)); "
    "A100-SXM4-80GB: 108 SMs, 1.41 GHz, 19.5 TFLOP/s, 2039 GB/s; H100 SXM5: 132 SMs, 1.98 GHz, "
    "66.9 TFLOP/s, 3352 GB/s. Bytes from each implementation's traffic model, less what it moves in L2 only (cuda_atomic's atomics); FLOPs and instructions "
    "from the work each kernel executes times the instructions per FFMA (FADD, RED) of its cheapest SASS loop doing that work, "
    "plus, once per warp launched, the instructions outside loops on its SASS's shortest path from entry to "
    "exit (sm_80 SASS for the A100, sm_90 for the H100); full warps, no bank conflicts, no latency."
)
