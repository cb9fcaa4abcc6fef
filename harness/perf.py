"""Work, traffic and the figures derived from a measured time (throughput, density, roofline).

Definitions (also in docs/benchmarks.md):

- **useful FLOPs** of the SW operator on an input (B, C, H, W): stage 1 costs 2*k*k FLOPs (a
  multiply-add) per active small kernel per conv-output position, (H+2e)*(W+2e) of them;
  stage 2 costs one addition per move that lands in the map (``traffic.scatter_moves``).
  Pruned kernels and off-map slots are not useful work. The number is a property of the
  case, the same for every implementation of it.
- **compulsory bytes**: x, the small kernels and the tables read once, the three outputs
  written once (``traffic.compulsory_bytes``).
- **roofline time**: max(FLOPs / peak FLOP/s, compulsory bytes / peak bandwidth), the least
  time any implementation could take on the machine; **% of roofline** is roofline time
  over the measured time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from harness.spec import ShiftwiseSpec
from harness.traffic import Shape, compulsory_bytes, scatter_moves

__all__ = ["useful_flops", "conv_flops", "compulsory_bytes", "Workload", "Metrics", "derived_metrics"]


def conv_flops(spec: ShiftwiseSpec, shape: Shape) -> int:
    """Stage 1: 2*k*k FLOPs per active small kernel per position of its (H+2e) x (W+2e) output."""
    batch, _, height, width = shape
    e, k = spec.extra_pad, spec.small_kernel
    return int(2 * k * k * int(spec.active.sum()) * (height + 2 * e) * (width + 2 * e) * batch)


def useful_flops(spec: ShiftwiseSpec, shape: Shape) -> int:
    """The SW operator's useful work: the small conv of active kernels plus one addition per
    in-map move of stage 2."""
    return conv_flops(spec, shape) + scatter_moves(spec, shape)


@dataclass(frozen=True)
class Workload:
    """What one timed call does, by count: ``flops`` of useful work, ``compulsory_bytes``, and
    ``traffic_bytes`` moved by the computation's own traffic model (None: not declared)."""

    batch: int
    flops: int
    compulsory_bytes: int
    traffic_bytes: int | None


@dataclass(frozen=True)
class Metrics:
    """Figures for one workload at one measured time (seconds per call)."""

    seconds: float
    images_per_s: float
    gflops: float
    #: bytes moved per second, by the traffic model when declared, else compulsory bytes
    gbps: float
    #: FLOPs per byte moved (traffic model when declared, else compulsory)
    density: float
    #: FLOPs per compulsory byte: the operator's own density, the roofline plot's x axis
    compulsory_density: float
    roofline_seconds: float | None
    pct_roofline: float | None
    #: which roof binds at this density: "compute" or "memory"
    bound: str | None
    #: faster than the roofline allows (pct_roofline > 100): a result to distrust, never to crown
    #: (work not done, done earlier, or a wrong work count); None without a roofline
    impossible: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def derived_metrics(
    workload: Workload, seconds: float, peak_gflops: float | None, peak_gbps: float | None
) -> Metrics:
    """Throughput, density and % of roofline of ``workload`` done in ``seconds``.

    The roofline needs both peaks; without them (not probed, not given) its fields are None.
    """
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"seconds must be a positive finite time, got {seconds!r}")
    moved = workload.traffic_bytes if workload.traffic_bytes is not None else workload.compulsory_bytes
    roofline_seconds = pct = bound = None
    if peak_gflops and peak_gbps:
        compute_time = workload.flops / (peak_gflops * 1e9)
        memory_time = workload.compulsory_bytes / (peak_gbps * 1e9)
        roofline_seconds = max(compute_time, memory_time)
        pct = 100.0 * roofline_seconds / seconds
        bound = "compute" if compute_time >= memory_time else "memory"
    return Metrics(
        seconds=seconds,
        images_per_s=workload.batch / seconds,
        gflops=workload.flops / seconds / 1e9,
        gbps=moved / seconds / 1e9,
        density=workload.flops / moved,
        compulsory_density=workload.flops / workload.compulsory_bytes,
        roofline_seconds=roofline_seconds,
        pct_roofline=pct,
        bound=bound,
        impossible=None if pct is None else pct > 100.0,
    )
