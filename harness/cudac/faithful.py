"""FAITHFUL time estimates (no GPU, nothing measured): what the lower bounds of
``harness.cudac.estimate`` leave out, added back from the kernels' own code, for an A100, an H100
and the H200 the GPU day runs on.

Per kernel launch:

- shared memory: the wavefronts of every access site, bank conflicts included, replayed from the
  kernel's index expressions for the 32 lanes of each warp (``Launch.shared_sites``,
  ``harness.cudac.banks``), at 1 wavefront (128 B) per SM per clock; global loads and stores in
  the work loops take one L1 wavefront each on the same data path;
- issue slots per pipe, from the SASS of the loops doing the work (the mean over those loops,
  not the cheapest) and of the loops that only stage data (per shared store replayed): the fma
  pipe (FFMA, FADD, FMUL: a FADD takes a full slot for one FLOP) at the FP32 lanes' rate,
  IMAD/IMUL and the other integer work at the integer lanes' rate (half the FP32 rate on the
  H100 and the H200), the uniform datapath at 1 per scheduler, all of them at most 4 warp
  instructions per SM per clock (the schedulers);
- latency hiding: the schedulers issue at most ``warps per scheduler x L / (L + latency)`` of
  the time, L the hot loop's length, latency a shared-memory round trip;
- the tail: the last wave of blocks is partial (time x ceil(waves) / waves);
- barriers: each stalls its block for about a shared-memory round trip, covered by the other
  resident blocks but for 1 / (resident blocks);
- DRAM: the launch's own bytes (``Launch.dram_bytes``) less the re-reads the L2 serves (those
  whose working set fits in its usable part), at the DRAM bandwidth or what the loads in flight
  sustain (Little's law: resident warps x 128 B x loads one loop has in flight / latency),
  whichever is lower;
- overlap: a block's phases (staging, then compute) are serial; the other resident blocks
  overlap them: time = max(DRAM, compute) + min(DRAM, compute) / resident blocks.

An implementation's kernels run one after another (times add); the work the implementation
leaves to PyTorch (a shift-and-add implementation's small conv) is its bytes (the traffic
model's rest) at the bandwidth or its FLOPs at the FP32 peak, whichever is larger.

Left out: the instruction cache, register bank conflicts, dependent-issue stalls beyond the
round trip above, DRAM page and refresh effects, L2 partition crossings on the H100/H200,
atomics' own throughput in the L2 (they count as L2 bytes only), clocks below boost (power,
thermal), launch overhead, warps of one block that diverge on different planes' tables (a
warp is replayed in lockstep with one channel's table) and the torch kernels' own efficiency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Machine:
    name: str
    arch: str
    sms: int
    clock_ghz: float  # boost, datasheet
    fp32_lanes: int  # per SM (an FFMA counts 2 FLOPs per lane per clock)
    int_lanes: int  # per SM
    dram_gbps: float
    dram_source: str  # where dram_gbps comes from
    l2_mb: float
    #: the part of the L2 data may be assumed to stay in (H100/H200: two partitions, some lines in both)
    l2_usable: float = 0.75
    schedulers: int = 4
    shared_wavefronts_per_clock: int = 1  # 128 B per SM per clock
    shared_latency_cycles: int = 30  # an LDS round trip, also a barrier's stall
    dram_latency_ns: float = 600.0  # loaded latency, for Little's law

    @property
    def fp32_tflops(self) -> float:
        return self.sms * self.fp32_lanes * 2 * self.clock_ghz / 1e3

    def per_s(self, per_sm_per_clock: float) -> float:
        return self.sms * per_sm_per_clock * self.clock_ghz * 1e9


#: A100-SXM4-80GB and H100 SXM5 80GB: datasheet figures (as the lower bounds use). H200 SXM
#: (the GPU day's machine): SMs, L2, clock and lanes as the H100 SXM5's datasheet but for its
#: 60 MB L2 (issue 21); DRAM its copy bandwidth as measured there (about 4.3 TB/s, issue 21; the
#: datasheet says 4.8). Not measured by this project.
MACHINES = (
    Machine("A100", "sm_80", 108, 1.41, 64, 64, 2039, "datasheet", 40),
    Machine("H100", "sm_90", 132, 1.98, 128, 64, 3352, "datasheet", 50),
    Machine("H200", "sm_90", 132, 1.98, 128, 64, 4300, "measured copy on the target machine (issue 21); datasheet 4800", 60),
)

#: Columns ``kernel_table`` adds per launch for this model.
COLUMNS = ["pipe_fma", "pipe_imad", "pipe_alu", "pipe_uniform", "pipe_lsu", "pipe_other", "pipe_total", "l1_global",
           "shared_ld_requests", "shared_st_requests", "shared_ld_wavefronts", "shared_st_wavefronts",
           "shared_ld_conflicts", "shared_st_conflicts", "shared_replayed", "barriers_per_block", "launch_dram_bytes",
           "launch_reuse", "hot_loop_length", "loads_in_flight", "warps_launched"]  # fmt: skip


def launch_columns(figures, launch) -> dict:
    """The model's inputs for one launch of a kernel: warp instructions per pipe (work loops,
    staging loops and the outside-loop path), the replayed shared-memory sites, barriers, bytes."""
    from harness.cudac.sass import PIPES

    per_fma, per_add, per_store = figures.pipes_per_fma or {}, figures.pipes_per_add or {}, figures.pipes_per_store or {}
    sites = launch.shared_sites
    stores = sum(s.requests for s in sites if s.op == "st" and s.name.startswith(("stage", "zero")))
    pipes = {
        pipe: launch.fma / 32 * per_fma.get(pipe, 0.0) + launch.adds / 32 * per_add.get(pipe, 0.0) + stores * per_store.get(pipe, 0.0)
        for pipe in PIPES
    }  # fmt: skip
    pipes["alu"] += launch.warps * figures.outside_loops  # the outside-loop path: integer setup, mostly
    l1_global = launch.fma / 32 * per_fma.get("global", 0.0) + launch.adds / 32 * per_add.get("global", 0.0)
    by_op = {op: [s for s in sites if s.op == op] for op in ("ld", "st")}
    row = {f"pipe_{pipe}": value for pipe, value in pipes.items()}
    row |= {
        "pipe_total": sum(pipes.values()),
        # global loads, stores and atomics in the work loops: an L1 wavefront each (coalesced or uniform)
        "l1_global": l1_global,
        "shared_replayed": bool(sites),
        "barriers_per_block": launch.barriers_per_block,
        "launch_dram_bytes": launch.dram_bytes,
        "launch_reuse": tuple(launch.reuse),
        "hot_loop_length": figures.hot_loop_length,
        "loads_in_flight": figures.loads_in_flight,
        "warps_launched": launch.warps,
    }  # fmt: skip
    for op, chosen in by_op.items():
        row[f"shared_{op}_requests"] = sum(s.requests for s in chosen)
        row[f"shared_{op}_wavefronts"] = sum(s.wavefronts for s in chosen)
        row[f"shared_{op}_conflicts"] = sum(s.conflicts for s in chosen)
    if not sites and (figures.shared_bytes or launch.dynamic_shared_bytes):  # not replayed: the SASS ratio's conflict-free wavefronts stand in
        row["shared_ld_wavefronts"] = row["shared_ld_requests"] = None
    elif not sites:  # no shared memory at all
        row["shared_replayed"] = True
    return row


@dataclass(frozen=True)
class KernelEstimate:
    seconds: float
    compute_seconds: float
    dram_seconds: float
    dram_bytes: float
    bound: str
    terms: dict  # seconds of each compute term before latency and tail


def _dram_bytes(row, machine: Machine) -> float:
    declared = row["launch_dram_bytes"]
    if declared is None or pd.isna(declared):
        return float("nan")
    # A re-read hits when its working set fits in the usable L2, else (streaming, LRU) misses.
    served = sum(b for b, ws in row["launch_reuse"] if ws <= machine.l2_mb * 1e6 * machine.l2_usable)
    return float(declared) - served


def kernel_estimate(row, machine: Machine) -> KernelEstimate:
    """The faithful estimate of one launch (a ``kernel_table`` row) on ``machine``."""
    clock = machine.clock_ghz * 1e9
    lanes_rate = {"fma": machine.fp32_lanes / 32, "imad": machine.int_lanes / 32, "alu": machine.int_lanes / 32,
                  "uniform": machine.schedulers, "lsu": machine.schedulers, "other": machine.schedulers}  # fmt: skip
    # The fma pipe's slots are shared by FP32 work and IMAD (its heavy half): their times add.
    terms = {
        "fma pipe": row["pipe_fma"] / machine.per_s(lanes_rate["fma"]) + row["pipe_imad"] / machine.per_s(lanes_rate["imad"]),
        "INT pipe": row["pipe_alu"] / machine.per_s(lanes_rate["alu"]),
        "issue": row["pipe_total"] / machine.per_s(machine.schedulers),
    }
    waves = (row["shared_ld_wavefronts"] or 0) + (row["shared_st_wavefronts"] or 0) if row["shared_replayed"] else row["shared_accesses"]
    terms["shared+L1"] = (waves + row["l1_global"]) / machine.per_s(machine.shared_wavefronts_per_clock)
    bound = max(terms, key=terms.get)
    compute = terms[bound]
    blocks = max(1, int(row["blocks_per_sm"]))
    warps_per_scheduler = blocks * -(-row["threads"] // 32) / machine.schedulers
    loop = max(1, row["hot_loop_length"])
    hiding = min(1.0, warps_per_scheduler * loop / (loop + machine.shared_latency_cycles))
    compute /= hiding
    waves_of_blocks = row["grid"] / (machine.sms * blocks)
    compute *= math.ceil(waves_of_blocks) / waves_of_blocks if waves_of_blocks else 1.0
    compute += row["grid"] * row["barriers_per_block"] * machine.shared_latency_cycles / blocks / (machine.sms * clock)
    dram = _dram_bytes(row, machine)
    in_flight = machine.sms * blocks * -(-row["threads"] // 32) * 128 * max(1, row["loads_in_flight"])
    bandwidth = min(machine.dram_gbps * 1e9, in_flight / (machine.dram_latency_ns * 1e-9))
    dram_seconds = dram / bandwidth if not math.isnan(dram) else 0.0
    seconds = max(dram_seconds, compute) + min(dram_seconds, compute) / blocks
    return KernelEstimate(seconds, compute, dram_seconds, dram, "DRAM" if dram_seconds > compute else bound, terms)


def _threads(block: str) -> int:
    total = 1
    for size in str(block).split("x"):
        total *= int(size)
    return total


def _declared(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _with_bytes(kernels: pd.DataFrame, traffic: float) -> pd.DataFrame:
    """The launches of one implementation on one stage and arch; when none declares its own
    DRAM bytes, the traffic model's (less the L2-only bytes) spread over them by warps launched."""
    if kernels["launch_dram_bytes"].map(_declared).any() or not traffic or math.isnan(traffic):
        return kernels
    kernels = kernels.copy()
    share = kernels["warps_launched"] / kernels["warps_launched"].sum()
    kernels["launch_dram_bytes"] = (traffic - kernels["l2_bytes"].sum()) * share
    kernels["launch_reuse"] = [()] * len(kernels)
    return kernels


def estimates(frame: pd.DataFrame, machines=MACHINES):
    """(implementation, case, machine, [(kernel row, KernelEstimate)], outside seconds, outside bytes)
    for every stage of every implementation in a ``kernel_table`` frame."""
    launched = frame[frame["case"] != ""].copy()
    launched["threads"] = launched["block"].map(_threads)
    for (name, case), group in launched.groupby(["implementation", "case"], sort=True):
        first = group.iloc[0]
        traffic = float(first["traffic_bytes"]) if pd.notna(first["traffic_bytes"]) else float("nan")
        for machine in machines:
            kernels = _with_bytes(group[group["arch"] == machine.arch], traffic)
            done = [(k, kernel_estimate(k, machine)) for _, k in kernels.iterrows()]
            declared = sum(float(k["launch_dram_bytes"]) for k, _ in done if _declared(k["launch_dram_bytes"]))
            # What the implementation leaves to PyTorch: the traffic model's rest, the outside FLOPs.
            rest = max(0.0, (0.0 if math.isnan(traffic) else traffic) - kernels["l2_bytes"].sum() - declared)
            flops = first["outside_flops"] if pd.notna(first["outside_flops"]) else 0
            outside = max(rest / (machine.dram_gbps * 1e9), flops / (machine.fp32_tflops * 1e12))
            yield name, case, machine, done, outside, rest


def faithful_table(frame: pd.DataFrame, lower: pd.DataFrame | None = None, machines=MACHINES) -> pd.DataFrame:
    """Per (implementation, stage): the faithful ESTIMATE on each machine with its binding
    term and the useful FLOPs it reaches as a share of the FP32 peak, beside the lower bound of
    ``harness.cudac.estimate`` where it has one, and the replayed bank-conflict ways (wavefronts
    per conflict-free wavefront, all sites). ``lower``: ``kernel_table.estimate_table(frame)``."""
    lower = lower.set_index(["implementation", "case"]) if lower is not None else pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["implementation", "case"]))
    rows: dict[tuple, dict] = {}
    for name, case, machine, done, outside, rest in estimates(frame, machines):
        row = rows.setdefault((name, case), {"implementation": name, "case": case})
        if "bank ways" not in row:
            kernels = pd.DataFrame([k for k, _ in done])
            waves = sum(kernels[f"shared_{op}_wavefronts"].fillna(0).sum() for op in ("ld", "st")) if len(kernels) else 0
            conflicts = sum(kernels[f"shared_{op}_conflicts"].fillna(0).sum() for op in ("ld", "st")) if len(kernels) else 0
            row["bank ways"] = waves / (waves - conflicts) if waves and waves > conflicts else 1.0 if len(kernels) else float("nan")
        total = sum(e.seconds for _, e in done) + outside
        slowest = max(done, key=lambda d: d[1].seconds)[1] if done else None
        if (name, case) in lower.index and f"{machine.name} estimate (us)" in lower.columns:
            row[f"{machine.name} lower bound (us)"] = lower.loc[(name, case), f"{machine.name} estimate (us)"]
        useful = done[0][0]["useful_flops"] if done and pd.notna(done[0][0]["useful_flops"]) else float("nan")
        row |= {f"{machine.name} DRAM MB": (sum(e.dram_bytes for _, e in done if not math.isnan(e.dram_bytes)) + rest) / 1e6,
                f"{machine.name} faithful (us)": total * 1e6,
                f"{machine.name} % FP32 peak": 100 * useful / (total * machine.fp32_tflops * 1e12) if total else float("nan"),
                f"{machine.name} bound": (slowest.bound if slowest else "") + (" + torch" if outside > 0 else "")}  # fmt: skip
    return pd.DataFrame(list(rows.values()))


#: What the counters phase sets beside ncu: the estimate of each ncu metric (``harness.gpuday.phases.NCU_METRICS``).
COUNTER_METRICS = {
    "dram__bytes.sum": "DRAM bytes read + written (cold L2)",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "theoretical occupancy (%), an upper bound of the achieved one",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum": "shared-load wavefronts beyond one per request (replayed)",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum": "shared-store wavefronts beyond one per request (replayed)",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum": "shared-load wavefronts (replayed)",
    "smsp__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active": "fma pipe (FP32 + IMAD) instructions over the estimated time (%)",
    "smsp__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active": "alu pipe (integer, logic) instructions over the estimated time (%)",
    "smsp__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active": "lsu instructions over the estimated time (%), peak assumed 1 per SM per clock",
    "gpu__time_duration.sum": "the kernel's faithful estimate (ns)",
}


def counter_estimates(frame: pd.DataFrame, case: str, machine: Machine) -> list[dict]:
    """The estimate of every ``COUNTER_METRICS`` metric per kernel of every implementation at
    ``case`` on ``machine``: what ``harness.gpuday.counters.compare`` sets beside ncu's numbers."""
    out = []
    for name, stage, m, done, _, _ in estimates(frame[frame["case"] == case], [machine]):
        for k, e in done:
            clock = m.clock_ghz * 1e9
            cycles = e.seconds * clock * m.sms  # SM cycles of the kernel
            values = {
                "dram__bytes.sum": e.dram_bytes,
                "sm__warps_active.avg.pct_of_peak_sustained_active": 100 * float(k["occupancy"]),
                "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum": k["shared_ld_conflicts"],
                "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum": k["shared_st_conflicts"],
                "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum": k["shared_ld_wavefronts"],
                "smsp__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active":
                    100 * (k["pipe_fma"] + k["pipe_imad"]) / (cycles * m.fp32_lanes / 32) if cycles else float("nan"),
                "smsp__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active":
                    100 * k["pipe_alu"] / (cycles * m.int_lanes / 32) if cycles else float("nan"),
                "smsp__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active": 100 * k["pipe_lsu"] / cycles if cycles else float("nan"),
                "gpu__time_duration.sum": e.seconds * 1e9,
            }  # fmt: skip
            out.append({"implementation": name, "kernel": k["kernel"], "case": stage, "machine": m.name,
                        **{metric: (None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)) for metric, v in values.items()}})  # fmt: skip
    return out


def markdown_sections(frame: pd.DataFrame, lower: pd.DataFrame | None = None) -> list[str]:
    """The kernels report's faithful sections: the estimates beside the lower bounds
    (``lower``), and the per-kernel counter estimates on the H200 (what the GPU day's counters
    phase compares)."""
    table = faithful_table(frame, lower)
    if table.empty:
        return []
    h200 = next(m for m in MACHINES if m.name == "H200")
    counters = pd.DataFrame([row for case in sorted(frame.loc[frame["case"] != "", "case"].unique())
                             for row in counter_estimates(frame, case, h200)])  # fmt: skip
    shown = counters.rename(columns={
        "dram__bytes.sum": "DRAM MB", "sm__warps_active.avg.pct_of_peak_sustained_active": "occupancy %",
        "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum": "ld conflicts (M)",
        "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum": "st conflicts (M)",
        "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum": "ld wavefronts (M)",
        "smsp__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active": "fma pipe %",
        "smsp__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active": "alu pipe %",
        "smsp__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active": "lsu pipe %",
        "gpu__time_duration.sum": "time (us)"}).drop(columns=["machine"])  # fmt: skip
    for column, scale in (("DRAM MB", 1e6), ("ld conflicts (M)", 1e6), ("st conflicts (M)", 1e6), ("ld wavefronts (M)", 1e6), ("time (us)", 1e3)):
        shown[column] = shown[column] / scale
    return [
        "## FAITHFUL time ESTIMATES on SW-tiny's stages (batch 64, float32), beside the lower bounds",
        derivation(),
        table.to_markdown(index=False, floatfmt=".3g"),
        "## Estimated counters on the H200, per kernel (what the GPU day's counters phase sets beside ncu)",
        "ESTIMATES, not measurements, one per ncu metric of the counters phase: " + "; ".join(
            f"`{metric}`: {meaning}" for metric, meaning in COUNTER_METRICS.items()) + ". Shared-memory figures of kernels "
        "without replayed sites are empty.",
        shown.to_markdown(index=False, floatfmt=".3g"),
    ]


def derivation() -> str:
    lines = ", ".join(
        f"{m.name} ({m.arch}): {m.sms} SMs, {m.clock_ghz} GHz, {m.fp32_lanes} FP32 and {m.int_lanes} INT lanes per SM "
        f"({m.fp32_tflops:.1f} TFLOP/s), {m.l2_mb:g} MB L2, DRAM {m.dram_gbps:g} GB/s ({m.dram_source})"
        for m in MACHINES
    )
    return (
        "FAITHFUL ESTIMATES, not measurements (`harness/cudac/faithful.py`): the lower bounds' counts plus what they leave out. "
        "Includes: shared-memory bank conflicts replayed from each kernel's index expressions for the 32 lanes of every warp "
        "(`shared_sites` beside each kernel, `harness/cudac/banks.py`); issue slots per pipe from the SASS of the work and staging "
        "loops (mean over the loops doing that work; FADD a full FP32 slot; IMAD and other integer work at the integer lanes' rate); "
        "L1 wavefronts of global loads in the work loops; latency hiding by the resident warps; the partial last wave; barriers "
        "(a shared-memory round trip each, covered by the other resident blocks); DRAM bytes per launch with the re-reads the L2 "
        "holds (75% of it usable) served there, at the bandwidth or what the loads in flight sustain (Little's law, 600 ns); "
        "a block's staging and compute serial, overlapped by the other resident blocks; cold L2 at the start (the timing phase "
        "flushes it). Leaves out: instruction cache, register bank conflicts, stalls beyond a shared-memory round trip, DRAM "
        "page effects, L2 partition crossings, atomic throughput in the L2, clocks below boost, launch overhead, divergence of "
        "warps that span planes of different channels, torch's own kernels' efficiency (their bytes at the bandwidth or their "
        f"FLOPs at the peak). Machines: {lines}."
    )

