"""The kernels report: for every GPU kernel of every implementation, built here with no GPU,
its ptxas resources, SASS instruction mix, the launches it makes on SW-tiny's stages with their
theoretical occupancy, and lower-bound time estimates for an A100 and an H100."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from harness.cudac import faithful
from harness.cudac.estimate import DERIVATION, GPUS, lower_bound
from harness.cudac.nvrtc import ARCHITECTURES
from harness.cudac.occupancy import occupancy
from harness.cudac.sass import CLASSES

#: ptxas columns (the table's first columns, as before) -> heading
COLUMNS = {
    "implementation": "implementation",
    "kernel": "kernel",
    "arch": "arch",
    "registers": "registers/thread",
    "shared_bytes": "static shared (B)",
    "constant_bytes": "constant bank 0 (B)",
    "stack_bytes": "stack (B)",
    "spill_stores": "spill stores (B)",
    "spill_loads": "spill loads (B)",
    "barriers": "barriers",
}
#: Columns added per launch: the case, build, launch shape and occupancy, the SASS mix
#: (``sass_<CLASS>``, ``loop_<CLASS>``) and the per-kernel estimate inputs.
LAUNCH_COLUMNS = [
    "build", "case", "block", "grid", "dynamic_shared_bytes", "blocks_per_sm", "occupancy", "occupancy_limiter",
    *(f"sass_{c}" for c in CLASSES), "sass_total", *(f"loop_{c}" for c in CLASSES), "loop_total",
    "outside_loops", "flops", "warp_instructions", "shared_accesses", "traffic_bytes", "l2_bytes", "compulsory_bytes", "useful_flops", "outside_flops",
    *faithful.COLUMNS,
]  # fmt: skip


def _stage(case: str):
    from harness.cudac.figures import stages

    return next(((spec, shape) for name, spec, shape in stages() if name == case), None)


def _rows(impl, figures) -> list[dict]:
    from harness.perf import conv_flops, useful_flops
    from harness.registry import Computes
    from harness.traffic import compulsory_bytes

    base = {"implementation": impl.name, **{k: getattr(figures, k) for k in COLUMNS if k not in ("implementation",)}}
    mix, loop = getattr(figures, "mix", {}) or {}, getattr(figures, "loop_mix", {}) or {}
    base |= {f"sass_{c}": mix.get(c) for c in CLASSES} | {"sass_total": sum(mix.values()) if mix else None}
    base |= {f"loop_{c}": loop.get(c) for c in CLASSES} | {"loop_total": sum(loop.values()) if loop else None}
    base["build"] = getattr(figures, "build", "")
    base["outside_loops"] = getattr(figures, "outside_loops", None)
    launches = getattr(figures, "launches", ())
    if not launches:
        return [base]
    rows = []
    for launch in launches:
        occ = occupancy(figures.arch, launch.threads, figures.registers, launch.dynamic_shared_bytes, figures.shared_bytes)
        per_fma, per_add = figures.per_fma or (0.0, 0.0), figures.per_add or (0.0, 0.0)
        fma_warps, add_warps = launch.fma / 32, launch.adds / 32
        row = base | {
            "case": launch.case, "block": "x".join(map(str, launch.block)), "grid": launch.grid,
            "dynamic_shared_bytes": launch.dynamic_shared_bytes, "blocks_per_sm": occ.blocks_per_sm,
            "occupancy": occ.fraction, "occupancy_limiter": occ.limiter, "flops": launch.flops,
            "warp_instructions": fma_warps * per_fma[0] + add_warps * per_add[0] + launch.warps * figures.outside_loops,
            "shared_accesses": fma_warps * per_fma[1] + add_warps * per_add[1],
        }  # fmt: skip
        if hasattr(figures, "pipes_per_fma"):
            row |= faithful.launch_columns(figures, launch)
        stage = _stage(launch.case)
        if stage is not None and impl.traffic is not None:
            spec, shape = stage
            row["traffic_bytes"] = impl.traffic(spec, shape, 4)
            row["l2_bytes"] = launch.l2_bytes
            row["compulsory_bytes"] = compulsory_bytes(spec, shape, 4)
            row["useful_flops"] = useful_flops(spec, shape)
            # A shift-and-add implementation's small conv runs in PyTorch: its FLOPs count too.
            row["outside_flops"] = conv_flops(spec, shape) if impl.computes is Computes.SHIFT_ADD else 0
        rows.append(row)
    return rows


def _one_build_per_launch(rows: list[dict]) -> None:
    """A kernel runs in one build at a stage: the estimates add up a stage's launches, so a
    kernel with several builds (compile-time configurations, autotuning configs) must give
    each stage's launch to one of them."""
    seen: dict[tuple, str] = {}
    for row in rows:
        if not row.get("case"):
            continue
        key = (row["kernel"], row["arch"], row["case"])
        if key in seen and seen[key] != row["build"]:
            raise ValueError(f"kernel {key[0]} ({key[1]}) is launched at {key[2]} by two builds, "
                             f"{seen[key]!r} and {row['build']!r}: give each stage's launch to the build that runs there")  # fmt: skip
        seen[key] = row["build"]


def kernel_table(implementations: Iterable, archs: Iterable[str] = ARCHITECTURES) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per (implementation, kernel, architecture, build, SW-tiny stage launch) of every
    implementation that declares ``kernel_figures``, all built here with no GPU (one row with
    an empty ``case`` for a kernel that declares no launches); and, by implementation, the
    errors of those whose kernels did not build (they never stop the others)."""
    rows, errors = [], {}
    for impl in implementations:
        if impl.kernel_figures is None:
            continue
        try:
            found = [row for arch in archs for f in impl.kernel_figures(arch) for row in _rows(impl, f)]
            _one_build_per_launch(found)
        except Exception as error:  # one implementation's build failure is reported, not fatal
            errors[impl.name] = f"{type(error).__name__}: {error}"
            continue
        rows += found
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *LAUNCH_COLUMNS])
    frame["case"] = frame["case"].fillna("")
    frame["build"] = frame["build"].fillna("")
    return frame.sort_values(["implementation", "kernel", "arch", "build", "case"], ignore_index=True), errors


def estimate_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (implementation, stage): DRAM bytes and executed FLOPs against the compulsory and
    useful ones, and the lower-bound ESTIMATE for each GPU with its binding bound."""
    launched = frame[frame["case"] != ""]
    rows = []
    for (name, case), group in launched.groupby(["implementation", "case"], sort=True):
        first = group.iloc[0]
        row = {"implementation": name, "case": case}
        # The traffic model's bytes but those a launch moves in L2 only (atomics), counted once per arch.
        dram = first["traffic_bytes"] - group[group["arch"] == group["arch"].iloc[0]]["l2_bytes"].sum()
        if pd.notna(dram):
            row |= {"DRAM MB": dram / 1e6, "x compulsory": dram / first["compulsory_bytes"]}
        for gpu in GPUS:
            kernels = group[group["arch"] == gpu.arch]
            flops = kernels["flops"].sum() + (first["outside_flops"] if pd.notna(first["outside_flops"]) else 0)
            if gpu is GPUS[0]:
                row |= {"GFLOP executed": flops / 1e9}
                if pd.notna(first["useful_flops"]):
                    row["x useful"] = flops / first["useful_flops"]
            seconds, bound = lower_bound(
                gpu, dram if pd.notna(dram) else 0, flops,
                kernels["warp_instructions"].sum(), kernels["shared_accesses"].sum(),
            )  # fmt: skip
            row |= {f"G warp instr ({gpu.arch})": kernels["warp_instructions"].sum() / 1e9,
                    f"{gpu.name} estimate (us)": seconds * 1e6, f"{gpu.name} bound": bound}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3g")


def kernel_table_markdown(frame: pd.DataFrame) -> str:
    resources = frame.drop_duplicates(["implementation", "kernel", "arch", "build"])
    shown = resources[[*COLUMNS, "build"]].astype({"constant_bytes": "Int64"}).astype({"constant_bytes": "string"})
    shown = shown.fillna({"constant_bytes": "not reported"}).rename(columns=COLUMNS)
    parts = ["## Resources (ptxas)", _fmt(shown)]

    mix = resources[["implementation", "kernel", "arch", "build", "sass_total", *(f"sass_{c}" for c in CLASSES),
                     "outside_loops", "loop_total", "loop_FFMA", "loop_FADD", "loop_LDS", "loop_RED"]].copy()  # fmt: skip
    mix["loop FFMA/instr"] = mix["loop_FFMA"] / mix["loop_total"]
    mix = mix.rename(columns=lambda c: "total" if c == "sass_total" else "outside loops" if c == "outside_loops"
                     else c.removeprefix("sass_").replace("loop_", "loop "))  # fmt: skip
    parts += [
        "## SASS instruction mix (nvdisasm, static counts)",
        "Whole kernel, then its hot loop (the innermost loop with the most FFMA, else the most FADD/RED): "
        "INT is integer, address, move and predicate work (uniform datapath included), CTRL branches and "
        "convergence, LOCAL local-memory (spill) traffic, RED atomics and reductions.",
        _fmt(mix),
    ]
    launches = frame[frame["case"] != ""][["implementation", "kernel", "build", "case", "arch", "block", "grid",
                                             "dynamic_shared_bytes", "registers", "blocks_per_sm", "occupancy",
                                             "occupancy_limiter"]]  # fmt: skip
    if not launches.empty:
        launches = launches.astype({c: "int64" for c in ("grid", "dynamic_shared_bytes", "registers", "blocks_per_sm")})
        parts += [
            "## Launches on SW-tiny's stages (batch 64, float32) and theoretical occupancy",
            "Occupancy by the CUDA occupancy rules (`harness/cudac/occupancy.py`, checked against NVIDIA's "
            "`cuda_occupancy.h`): resident warps over 64 per SM, the largest shared-memory carveout, 1 KiB "
            "reserved per block.",
            _fmt(launches.rename(columns={"dynamic_shared_bytes": "dynamic shared (B)", "occupancy_limiter": "limited by"})),
        ]
        lower = estimate_table(frame)
        parts += ["## Lower-bound time ESTIMATES on SW-tiny's stages (batch 64, float32)", DERIVATION, _fmt(lower)]
        parts += faithful.markdown_sections(frame, lower)
    return "\n\n".join(parts)
