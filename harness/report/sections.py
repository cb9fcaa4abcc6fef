"""The report's markdown sections, each a function of the runs or of the results frame."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from harness.cudac.kernel_table import COLUMNS as KERNEL_COLUMNS
from harness.registry import Role
from harness.results import LayerComparisonRow
from harness.report.format import ABOVE_ROOF, ABOVE_ROOF_NOTE, MISSING, number, pct_roofline, table
from harness.report.frame import CASE_PARAMS, KEY, case_order, compare
from harness.report.load import PEAKS_TOLERANCE, Kernels, Run, run_labels, same_peaks

#: results-table columns: (header, frame column, formatter)
SHOWN = (("median ms", "median_s", lambda v: number(v * 1e3)), ("IQR ms", "iqr_s", lambda v: number(v * 1e3)),
         ("images/s", "images_per_s", number), ("GFLOP/s", "gflops", number), ("GB/s", "gbps", number),
         ("density", "density", number), ("% roofline", "pct_roofline", pct_roofline),
         ("speedup vs baseline", "speedup", number))  # fmt: skip
RESULTS_NOTE = (
    "Medians and interquartile ranges of the timed call. GFLOP/s and % roofline count each computation's own"
    " executed FLOPs (the SW operator's useful FLOPs for implementations, a PyTorch way's or another operator's own"
    " conv FLOPs); GB/s and density use the computation's traffic model when declared, else compulsory bytes."
    " Speedup vs baseline = the baseline's median / this median on the same case, device and run; the baseline is"
    " the computation that declares itself so ({baseline}). Roles: implementation (an SW implementation under"
    " test), pytorch_way (the same branches computed with plain PyTorch: what an implementation must beat),"
    " lower_precision (the same branches in FP16 / BF16, for context: never the PyTorch way an FP32 implementation is"
    " judged against), other_operator (another large-kernel operator, for context). — : not available."
)
IMPOSSIBLE_NOTE = (
    "Not crowned: an implementation timed above 100% of the roofline of the operator's useful work. Either the run's "
    "probed peaks read low (rerun idle, or pass --peak-gflops / --peak-gbps) or what was timed is not the work it "
    "claims; it is listed in the results tables, never as the fastest."
)

SUMMARY_NOTE = (
    "Per case: the fastest SW implementation against the fastest PyTorch way (the minimum over every computation"
    " declared a PyTorch way, named in the row). *% roofline* counts the SW operator's useful FLOPs for both (the"
    " same work); *its % roofline (executed)* counts the FLOPs the PyTorch way executes (its dense taps). *Roofline"
    " limit* is the most any implementation could gain over the PyTorch way: the PyTorch way's median over the"
    " roofline time of the useful work. *Paired speedup* (where the run timed the case's interleaved comparison,"
    " `harness/layer_compare.py`): the same implementation's speed over the fastest PyTorch way of those rounds"
    " (named when it is not the one beside it), from rounds in which every computation ran once in a random order,"
    " with its 95% bootstrap interval; it holds where the load drifts between items, which the ratio of medians does not."
)


def runs_table(runs: Sequence[Run]) -> str:
    labels = run_labels(runs)
    rows = [{"file": r.path.name, "machine": labels[r.path], "date": r.data.get("datetime", MISSING),
             "tier": r.data["sw"].get("tier", MISSING), "suites": ", ".join(r.data["sw"].get("suites", [])),
             "command": f"`{r.data['sw']['command']}`",
             "complete": "**no: interrupted**" if r.data["sw"].get("interrupted") else "yes"} for r in runs]  # fmt: skip
    return table(pd.DataFrame(rows).sort_values(["machine", "date", "file"]))


def machines_section(runs: Sequence[Run]) -> str:
    """A column per run label: the machine, its probed peaks (those of that run), its software."""
    labels, columns = run_labels(runs), {}
    for run in sorted(runs, key=lambda r: labels[r.path]):
        m, label = run.machine, labels[run.path]
        cpu, gpu = m.get("cpu") or {}, m.get("gpu") or {}
        rows = {"fingerprint": m["fingerprint"], "CPU": cpu.get("model"), "CPU threads usable": cpu.get("threads"),
                "torch threads": cpu.get("torch_threads"), "numba threads": cpu.get("numba_threads"),
                "GPU": gpu.get("name", "no GPU"), "GPU SMs": gpu.get("sm_count")}  # fmt: skip
        for device, name in (("cpu", "CPU"), ("cuda", "GPU")):
            peaks = run.peaks(device)
            if device == "cuda" and not gpu:
                continue
            for unit, key in (("GFLOP/s", "gflops"), ("GB/s", "gbps")):
                source = peaks.get(f"{key}_source", "not recorded")
                rows[f"{name} peak {unit}"] = f"{number(peaks.get(key))} ({source})"
            end = (run.record.probes.get("end") or {}).get(device)
            if end is not None:  # probed again after the last benchmark
                drift = "" if same_peaks(peaks, end) else f" **drift: the peaks moved by more than {number((PEAKS_TOLERANCE - 1) * 100)}% during the run**"
                rows[f"{name} peaks at the end"] = f"{number(end.get('gflops'))} GFLOP/s, {number(end.get('gbps'))} GB/s{drift}"
        rows.update({name: version for name, version in m["software"].items()})
        columns.setdefault(label, {}).update({k: number(v) for k, v in rows.items()})
    return table(pd.DataFrame(columns).rename_axis("").reset_index())


def paired_cell(row: LayerComparisonRow | None, implementation: str, way: str) -> str:
    """``implementation``'s paired speedup over the fastest way of the comparison's rounds, with its interval."""
    entry = row.ratio(implementation) if row is not None else None
    if entry is None:
        return MISSING
    named = "" if row.fastest_way == way else f" vs {row.fastest_way}"
    return f"{number(entry.ratio)} [{number(entry.low)}, {number(entry.high)}]{named}"


def summary_section(frame: pd.DataFrame, paired: dict[tuple, LayerComparisonRow] | None = None) -> list[str]:
    """The fastest implementation per case against the fastest PyTorch way, with the roofline's
    limit; ``paired``: the layer comparisons by (machine, device, dtype, suite, case)."""
    key = ["machine", "device", "dtype", "suite", "case", "form"]  # like with like: a deployed layer against the deployed forms
    frame = frame.assign(form=frame["form"].fillna("operator")) if "form" in frame else frame.assign(form="operator")
    paired = paired or {}
    rows, impossible = [], []
    for values, group in frame.groupby(key, sort=False):
        mine = group[group["role"] == Role.IMPLEMENTATION.value]
        ways = group[group["role"] == Role.PYTORCH_WAY.value]
        if mine.empty or ways.empty:
            continue
        above = mine["useful_pct_roofline"] > 100.0  # faster than the useful work allows at the run's peaks
        impossible += [f"- {r['case']} ({r['machine']}, {r['device']}): **{r['computation']}** at "
                       f"{number(r['median_s'] * 1e3)} ms is {number(r['useful_pct_roofline'])}% of the roofline of "
                       "the operator's useful work: impossible at this run's peaks, not crowned"
                       for _, r in mine[above].iterrows()]  # fmt: skip
        if above.all():
            continue
        mine = mine[~above]
        best, way = mine.loc[mine["median_s"].idxmin()], ways.loc[ways["median_s"].idxmin()]
        rows.append(dict(zip(key, values)) | {
            "fastest implementation": best["computation"],
            "median ms": number(best["median_s"] * 1e3),
            "% roofline": pct_roofline(best["useful_pct_roofline"]),
            "fastest PyTorch way": way["computation"],
            "its median ms": number(way["median_s"] * 1e3),
            "its % roofline (useful)": pct_roofline(way["useful_pct_roofline"]),
            "its % roofline (executed)": pct_roofline(way["pct_roofline"]),
            "speedup": number(way["median_s"] / best["median_s"]),
            "paired speedup [95%]": paired_cell(paired.get(tuple(values)), best["computation"], way["computation"]),
            "roofline limit": number(way["median_s"] / best["useful_roofline_s"]) if best["useful_roofline_s"] else MISSING,
        })  # fmt: skip
    if impossible:
        impossible.insert(0, IMPOSSIBLE_NOTE)
    if not rows:
        return ["No case has both an SW implementation and a PyTorch way timed (within the roofline).", *impossible]
    shown = pd.DataFrame(rows).sort_values(key, key=lambda c: case_order(c) if c.name == "case" else c)
    for column in ("machine", "device", "dtype", "form"):
        if shown[column].nunique() == 1:
            shown = shown.drop(columns=column)
    numeric = ["median ms", "% roofline", "its median ms", "its % roofline (useful)", "its % roofline (executed)",
               "speedup", "roofline limit"]  # fmt: skip
    parts = [SUMMARY_NOTE, table(shown, numeric=numeric)]
    if shown.map(lambda v: isinstance(v, str) and v.endswith(ABOVE_ROOF)).any().any():
        parts.append(ABOVE_ROOF_NOTE)
    return [*parts, *impossible]


def results_tables(frame: pd.DataFrame, descriptions: dict[str, str] | None = None) -> list[str]:
    """Per suite: its description, the cases' parameters, then one row per (case, computation, device), a
    column group per run."""
    baselines = sorted(frame.loc[frame["baseline"], "computation"].unique())
    parts = [RESULTS_NOTE.format(baseline=", ".join(baselines) or "none in these runs")]
    machines = sorted(frame["machine"].unique())
    index = ["case", "computation", "role", "device", "dtype"]
    for suite, rows in frame.groupby("suite", sort=True):
        cases = rows.drop_duplicates(["case"]).sort_values("case", key=case_order)
        params = cases[["case", *CASE_PARAMS]].copy()
        params["useful GFLOP"] = cases["useful_flops"].map(lambda v: MISSING if pd.isna(v) else number(v / 1e9))
        parts.append(f"### Suite `{suite}`")
        if descriptions and suite in descriptions:
            parts.append(descriptions[suite])
        parts.append(table(params))
        merged = None
        for machine in machines:
            mine = rows[rows["machine"] == machine].set_index(index)
            shown = pd.DataFrame(
                {"threads": mine["threads"].map(lambda v: MISSING if pd.isna(v) else str(int(v)))}
                | {header: mine[column].map(formatter) for header, column, formatter in SHOWN}
            )
            shown["% roofline"] += mine["bound"].map(lambda b: f" ({b})" if isinstance(b, str) else "")
            if len(machines) > 1:
                shown.columns = [f"{machine} {column}" for column in shown.columns]
            merged = shown if merged is None else merged.join(shown, how="outer")
        merged = merged.reset_index()
        merged["_rank"] = merged["role"].map({r.value: n for n, r in enumerate(Role)})
        merged = merged.sort_values(["case", "_rank", "computation", "device", "dtype"],
                                    key=lambda c: case_order(c) if c.name == "case" else c).drop(columns="_rank")  # fmt: skip
        if merged["dtype"].nunique() == 1:
            merged = merged.drop(columns="dtype")
        parts.append(table(merged, numeric=[c for c in merged.columns if c not in index]))
    if (frame["pct_roofline"] > 100).any():
        parts.append(ABOVE_ROOF_NOTE)
    return parts


def listings(runs: Sequence[Run], kernels_file: Kernels | None = None) -> list[str]:
    """Not run, failures, and the kernels table with its build errors when present: those of
    ``swbench kernels``' artifact (``kernels_file``), and those older runs stored themselves."""
    labels, parts = run_labels(runs), []
    for heading, key, columns in (("Not run", "not_run", ["computation", "device", "reason"]),
                                  ("Failures", "failures", ["computation", "device", "case", "error", "reproducer"])):  # fmt: skip
        entries = [{"machine": labels[r.path]} | {c: e.get(c) for c in columns} for r in runs for e in r.data["sw"][key]]
        if key == "failures":  # the command that reruns the item alone, as code (runs before it have none)
            entries = [e | {"reproducer": f"`{e['reproducer']}`" if e["reproducer"] else ""} for e in entries]
        listed = pd.DataFrame(entries, columns=["machine", *columns]).drop_duplicates()
        listed = listed.sort_values(["machine", *columns], key=lambda c: c.astype(str))
        parts += [f"## {heading}", table(listed if len(set(labels.values())) > 1 else listed.drop(columns="machine"))]
    stored = [(r.data["sw"].get("kernels") or [], r.data["sw"].get("kernel_errors") or {}) for r in runs]
    if kernels_file is not None:
        stored.append((kernels_file.rows, kernels_file.errors))
    kernels = pd.DataFrame([row for rows, _ in stored for row in rows])
    errors = sorted({(n, e) for _, found in stored for n, e in found.items()})
    if not kernels.empty or errors:
        parts.append("## GPU kernels (ptxas)")
    if not kernels.empty:
        # The ptxas figures and occupancy per launch; the SASS mix and the GPU estimates are in
        # `swbench kernels` (reports/kernels.md), too wide for this report.
        shown = [c for c in (*KERNEL_COLUMNS, "case", "dynamic_shared_bytes", "occupancy") if c in kernels]
        kernels = kernels[shown]
        order = [c for c in ("implementation", "kernel", "arch", "case") if c in kernels]
        kernels = kernels.map(lambda v: repr(v) if isinstance(v, (dict, list)) else v).drop_duplicates().sort_values(order)
        integral = kernels.map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else v)
        parts.append(table(integral.rename(columns=KERNEL_COLUMNS | {"dynamic_shared_bytes": "dynamic shared (B)"})))
        parts.append("The SASS instruction mix and the labelled A100/H100 lower-bound estimates: `swbench kernels` "
                     "(reports/kernels.md).")
    parts += [f"- {name}: kernels did not build: {error}" for name, error in errors]
    load_errors = sorted({(f, e) for r in runs for f, e in (r.data["sw"].get("load_errors") or {}).items()})
    if load_errors:
        parts += ["## Implementation files that did not load", *(f"- `{file}`: {error}" for file, error in load_errors)]
    return parts


def comparison_section(new: pd.DataFrame, base: pd.DataFrame, new_runs: Sequence[Run], base_runs: Sequence[Run],
                       noise_floor: float) -> list[str]:  # fmt: skip
    files = ", ".join(f"`{run.path.name}`" for run in base_runs)
    both = compare(new, base, noise_floor, new_runs, base_runs) if not new.empty and not base.empty else pd.DataFrame()
    if both.empty:
        return [f"Baseline {files}: no (machine, device, case, computation) in common with this run"
                " (results compare only on the same machine)."]  # fmt: skip
    shown = both[[k for k in KEY if k != "dtype" or both[k].nunique() > 1]].copy()
    shown["base median ms"] = (both["median_s_base"] * 1e3).map(number)
    shown["new median ms"] = (both["median_s_new"] * 1e3).map(number)
    shown["new/base"] = both["ratio"].map(number)
    shown["verdict"] = both["verdict"]
    counts = both["verdict"].value_counts()
    verdicts = ("regression", "improvement", "within noise", "probes differ")
    summary = ", ".join(f"{v}: {counts.get(v, 0)}" for v in verdicts if v != "probes differ" or counts.get(v, 0))
    only = f"{len(new) - len(both)} results only in this run, {len(base) - len(both)} only in the baseline."
    comparable = both[both["verdict"] != "probes differ"]
    ratios = comparable["ratio"] if not comparable.empty else both["ratio"]
    spread = math.exp(ratios.map(lambda r: abs(math.log(r))).quantile(0.95))
    rule = (
        "Verdicts: regression when new q1 > base q3 and new/base > the noise floor "
        f"({number(noise_floor)}); improvement symmetrically. 95% of the ratios here are within "
        f"{number(spread)}x either way: if the code did not change (an A/A comparison), that is this machine's "
        "between-run noise, to pass as --noise-floor."
    )
    parts = [f"Baseline {files}: {summary}. {only} {rule}"]
    if counts.get("probes differ", 0):
        parts.append(
            f"**The runs are not comparable on {counts['probes differ']} results**: their probed peaks differ by more "
            f"than the noise floor (at least 10%), so the machine was not in the same state (e.g. one run under load). "
            "Those results are marked *probes differ*, not regressions or improvements."
        )
    return [*parts, table(shown, ["base median ms", "new median ms", "new/base"])]
