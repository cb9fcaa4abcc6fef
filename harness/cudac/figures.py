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
from harness.cudac.sass import CLASSES, PIPES, KernelSass, Mix, kernel_sass, pipe_counts



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
    #: for the faithful estimate (``harness.cudac.faithful``): every shared-memory access site
    #: of the launch replayed from the kernel's index expressions (``harness.cudac.banks``)
    shared_sites: tuple = ()
    #: barriers (``__syncthreads``) each block executes
    barriers_per_block: int = 0
    #: DRAM bytes this launch moves with a cold L2, as the implementation counts them (None:
    #: not declared; the implementation's traffic model then stands for all its launches)
    dram_bytes: int | None = None
    #: of ``dram_bytes``: (bytes, working set) of re-reads of data touched ``working set`` bytes
    #: earlier, which the L2 serves when that working set fits in it (0: just before, by a neighbour)
    reuse: tuple[tuple[int, int], ...] = ()

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
    #: for the faithful estimate: warp instructions per pipe (``sass.PIPES``) per FFMA, per
    #: FADD/RED, and per shared store of the loops that only stage (the mean over the loops
    #: doing that work, not the cheapest); the hot loop's length; the most global loads one
    #: innermost loop issues (loads a warp has in flight)
    pipes_per_fma: dict = field(default_factory=dict)
    pipes_per_add: dict = field(default_factory=dict)
    pipes_per_store: dict = field(default_factory=dict)
    hot_loop_length: int = 0
    loads_in_flight: int = 1


def stages() -> tuple[tuple[str, object, tuple[int, int, int, int]], ...]:
    """(case name, spec, input shape) of the stages every GPU figure is given for: the cases of the
    suite that declares ``figures_batch`` (cases/sw_tiny.toml: SW-tiny's four layers) at that batch."""
    from harness.cases import figures_stages

    suite, found = figures_stages()
    if not found:
        raise RuntimeError(f"no batch-{suite.figures_batch} cases at sparsity 0 in the {suite.name} suite")
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


def _pipes(sass: KernelSass, work: tuple[str, ...], exclude: tuple[str, ...] = ()) -> dict:
    """Warp instructions per pipe per ``work`` instruction: the mean over the innermost loops
    doing that work (and none of ``exclude``); the whole kernel's when no loop does."""
    loops = [sass.instructions[a : b + 1] for a, b in sass.loops]
    chosen = [code for code in loops if sum(Mix.of(code)[k] for k in work) and not sum(Mix.of(code)[k] for k in exclude)]
    if not chosen:
        chosen = [sass.instructions] if sum(sass.mix[k] for k in work) else []
    if not chosen:
        return {}
    per = []
    for code in chosen:
        mix, done = Mix.of(code), sum(Mix.of(code)[k] for k in work)
        counts = pipe_counts(code) | {"global": sum(mix[k] for k in ("LDG", "STG", "RED", "LOCAL"))}
        per.append({pipe: n / done for pipe, n in counts.items()})
    return {pipe: sum(p[pipe] for p in per) / len(per) for pipe in (*PIPES, "global")}


def with_sass(figures: PtxasFigures, sass: KernelSass, launches=(), build: str = "") -> KernelFigures:
    hot = sass.hot_loop
    loads = [Mix.of(sass.instructions[a : b + 1])["LDG"] for a, b in sass.loops]
    return KernelFigures(
        **vars(figures),
        build=build,
        mix=dict(sass.mix.counts),
        loop_mix=dict(sass.loop_mix(hot).counts) if hot else {},
        per_fma=_ratios(sass, ("FFMA",)),
        per_add=_ratios(sass, ("FADD", "RED"), exclude=("FFMA",)),
        outside_loops=sass.outside_loops,
        launches=tuple(launches),
        pipes_per_fma=_pipes(sass, ("FFMA",)),
        pipes_per_add=_pipes(sass, ("FADD", "RED"), exclude=("FFMA",)),
        pipes_per_store=_pipes(sass, ("STS",), exclude=("FFMA", "FADD", "RED")),
        hot_loop_length=hot[1] - hot[0] + 1 if hot else 0,
        loads_in_flight=max([n for n in loads if n] or [1]),
    )


def figures_of(compiled, launches: dict[str, list[Launch]] | None = None, build: str = "") -> list[KernelFigures]:
    """``KernelFigures`` of every kernel of an NVRTC build (``harness.cudac.nvrtc.Compiled``),
    with the launches given by kernel name."""
    sass = kernel_sass(compiled.cubin)
    launches = launches or {}
    return [with_sass(f, sass[name], launches.get(name, ()), build) for name, f in compiled.figures.items()]


__all__ = ["CLASSES", "KernelFigures", "Launch", "Mix", "figures_of", "stages", "with_sass"]
