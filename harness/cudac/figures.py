"""GPU figures of a kernel that need no GPU: ptxas resources, the SASS instruction mix, and the
launches an implementation makes on the SW-tiny stages (for occupancy and estimates).

An implementation's ``kernel_figures(arch)`` returns ``KernelFigures`` (or plain
``PtxasFigures``, which then get no launch figures): ``with_sass`` adds the mix from the
cubin, and each ``Launch`` says the grid, block, dynamic shared memory and the floating-point
work of one launch on one stage, counted by the implementation from its own tables.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from harness.cudac.nvrtc import PtxasFigures
from harness.cudac.sass import CLASSES, KernelSass, Mix, kernel_sass

#: The stages every GPU figure is given for: SW-tiny's four layers at batch 64 (cases/sw_tiny.toml).
STAGE_SUITE, STAGE_BATCH = "sw_tiny", 64


@dataclass(frozen=True)
class Launch:
    case: str  # e.g. "tiny-s1-b64"
    grid: int  # blocks
    block: tuple[int, ...]
    dynamic_shared_bytes: int
    #: multiply-adds and additions (atomic ones included) this launch executes, all threads
    fma: int
    adds: int
    #: bytes of the implementation's traffic model that this launch moves in L2 only (atomics'
    #: read-modify-writes): left out of the DRAM bound
    l2_bytes: int = 0

    @property
    def threads(self) -> int:
        total = 1
        for size in self.block:
            total *= size
        return total

    @property
    def warps(self) -> int:
        return self.grid * -(-self.threads // 32)

    @property
    def flops(self) -> int:
        return 2 * self.fma + self.adds


@dataclass(frozen=True)
class KernelFigures(PtxasFigures):
    #: which build (compile-time configuration) of the kernel; "" when there is one
    build: str = ""
    #: static SASS counts by class (``harness.cudac.sass.CLASSES``), whole kernel
    mix: dict = field(default_factory=dict)
    #: the same for its hot loop (``KernelSass.hot_loop``), or empty
    loop_mix: dict = field(default_factory=dict)
    #: instructions and shared-memory wavefronts per work instruction (FFMA / FADD+RED) in
    #: the innermost loops where that work happens (from SASS), for the estimates
    per_fma: tuple[float, float] | None = None
    per_add: tuple[float, float] | None = None
    #: instructions outside every loop, counted once per warp launched
    outside_loops: int = 0
    launches: tuple[Launch, ...] = ()


@functools.lru_cache(maxsize=1)
def stages() -> tuple[tuple[str, object, tuple[int, int, int, int]], ...]:
    """(case name, spec, input shape) of SW-tiny's four stages at batch 64."""
    from harness.cases import load_cases

    found = [c for c in load_cases(suites=[STAGE_SUITE]) if c.batch == STAGE_BATCH and c.sparsity == 0]
    if not found:
        raise RuntimeError(f"no batch-{STAGE_BATCH} cases in the {STAGE_SUITE} suite")
    return tuple((c.name, c.spec(), c.input_shape) for c in found)


def _ratios(sass: KernelSass, work: tuple[str, ...], exclude: tuple[str, ...] = ()) -> tuple[float, float] | None:
    """(instructions, shared-memory wavefronts) per ``work`` instruction, each the least over the
    innermost loops doing that work (and none of ``exclude``): without trip counts, the floor
    every such instruction costs. The whole kernel's when no loop does that work."""
    mixes = [sass.loop_mix(loop) for loop in sass.loops]
    chosen = [m for m in mixes if sum(m[k] for k in work) and not sum(m[k] for k in exclude)]
    if not chosen:
        chosen = [sass.mix] if sum(sass.mix[k] for k in work) else []
    if not chosen:
        return None
    per = [(m.total / sum(m[k] for k in work), m.shared_wavefronts / sum(m[k] for k in work)) for m in chosen]
    return min(p[0] for p in per), min(p[1] for p in per)


def with_sass(figures: PtxasFigures, sass: KernelSass, launches=(), build: str = "") -> KernelFigures:
    hot = sass.hot_loop
    return KernelFigures(
        **vars(figures),
        build=build,
        mix=dict(sass.mix.counts),
        loop_mix=dict(sass.loop_mix(hot).counts) if hot else {},
        per_fma=_ratios(sass, ("FFMA",)),
        per_add=_ratios(sass, ("FADD", "RED"), exclude=("FFMA",)),
        outside_loops=sass.outside_loops,
        launches=tuple(launches),
    )


def figures_of(compiled, launches: dict[str, list[Launch]] | None = None, build: str = "") -> list[KernelFigures]:
    """``KernelFigures`` of every kernel of an NVRTC build (``harness.cudac.nvrtc.Compiled``),
    with the launches given by kernel name."""
    sass = kernel_sass(compiled.cubin)
    launches = launches or {}
    return [with_sass(f, sass[name], launches.get(name, ()), build) for name, f in compiled.figures.items()]


__all__ = ["CLASSES", "KernelFigures", "Launch", "Mix", "figures_of", "stages", "with_sass"]
