"""Markdown report with PNG plots from saved benchmark JSON (``pytest --benchmark-only
--benchmark-json=FILE``, pytest-benchmark plus this project's ``sw`` keys).

Every figure is recomputed here from the timing statistics, the work counts and the machine's
peaks (``harness.perf.derived_metrics``); derived values stored in the JSON are ignored. The
speed baseline is the peer ``rep_merged`` on the same case, device and machine. The same input
always gives the same markdown, byte for byte, and the same PNGs: rows are sorted, numbers
are formatted to fixed significant digits, and nothing records when the report was made.

Peaks: CPU results use ``machine_info.sw.peaks``; CUDA results use ``machine_info.sw.gpu.peaks``
when recorded (the CPU's peaks are never applied to a GPU).
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.cudac.report import COLUMNS as KERNEL_COLUMNS
from harness.files import replace_atomically, write_text_atomically
from harness.perf import Workload, derived_metrics

__all__ = ["ReportInputError", "Run", "Report", "load_runs", "results_frame", "sweep_parameter",
           "compare", "render_report", "write_report"]  # fmt: skip

BASELINE_PEER = "rep_merged"
SWEEP_PARAMETERS = ("big_kernel", "groups", "sparsity", "small_kernel")
MISSING = "—"
#: identifies one measurement; results merge and compare on it
KEY = ["machine", "device", "dtype", "suite", "case", "computation"]
STATS = ("median", "iqr", "q1", "q3", "rounds")
EXTRA = ("kind", "computation", "device", "case", "suite", "batch", "flops", "compulsory_bytes")
CASE_PARAMS = ("batch", "channels", "height", "width", "big_kernel", "small_kernel", "groups", "nk", "sparsity",
               "tables")  # fmt: skip
#: results-table columns: (header, frame column, scale)
SHOWN = (("median ms", "median_s", 1e3), ("IQR ms", "iqr_s", 1e3), ("images/s", "images_per_s", 1),
         ("GFLOP/s", "gflops", 1), ("GB/s", "gbps", 1), ("density", "density", 1),
         ("% roofline", "pct_roofline", 1), ("speedup vs rep_merged", "speedup", 1))  # fmt: skip


class ReportInputError(ValueError):
    """A results file that cannot be reported on; the message names the file and the key."""


@dataclass(frozen=True)
class Run:
    """One saved benchmark JSON file."""

    path: Path
    data: dict

    @property
    def machine(self) -> dict:
        return self.data["machine_info"]["sw"]

    @property
    def fingerprint(self) -> str:
        return self.machine["fingerprint"]

    def peaks(self, device: str) -> dict:
        """The roofline peaks for ``device``: CPU peaks, or the GPU's own (empty if not recorded)."""
        if device == "cpu":
            return self.machine.get("peaks") or {}
        return (self.machine.get("gpu") or {}).get("peaks") or {}


@dataclass
class Report:
    markdown: str
    #: PNG file name -> figure; the markdown links to these names
    figures: dict[str, Figure] = field(default_factory=dict)


def _require(mapping: object, key: str, path: Path, where: str) -> object:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ReportInputError(f"{path}: {where} has no {key!r} key")
    return mapping[key]


def load_runs(paths: Iterable[Path | str]) -> list[Run]:
    """Read and validate benchmark JSON files, in the order given."""
    runs = []
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ReportInputError(f"{path}: cannot read benchmark JSON: {error}") from None
        info = _require(data, "machine_info", path, "the file")
        if "sw" not in data or not isinstance(info, dict) or "sw" not in info:
            raise ReportInputError(
                f"{path}: not written by this project's benchmarks (no 'sw' key in the file or in machine_info);"
                " produce it with `pytest --benchmark-only --benchmark-json=FILE` in this repository"
            )
        for key in ("fingerprint", "peaks", "software"):
            _require(info["sw"], key, path, "machine_info.sw")
        for key in ("command", "failures", "not_run"):
            _require(data["sw"], key, path, "sw")
        benchmarks = _require(data, "benchmarks", path, "the file")
        for number, bench in enumerate(benchmarks if isinstance(benchmarks, list) else [None]):
            where = f"benchmark {bench.get('name', number) if isinstance(bench, dict) else number!r}"
            stats, extra = _require(bench, "stats", path, where), _require(bench, "extra_info", path, where)
            for key in STATS:
                if not isinstance(_require(stats, key, path, f"{where} stats"), (int, float)):
                    raise ReportInputError(f"{path}: {where} stats {key!r} is not a number: {stats[key]!r}")
            for key in EXTRA:
                _require(extra, key, path, f"{where} extra_info")
        runs.append(Run(path, data))
    return runs


def machine_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Short column label per machine fingerprint: its host name, or the whole fingerprint if two share a host."""
    fingerprints = sorted({run.fingerprint for run in runs})
    hosts = [fp.split(" / ")[0] for fp in fingerprints]
    return {fp: host if hosts.count(host) == 1 else fp for fp, host in zip(fingerprints, hosts)}


def results_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per (machine, device, dtype, suite, case, computation), metrics recomputed."""
    labels, rows, seen = machine_labels(runs), [], {}
    for run in runs:
        for bench in run.data["benchmarks"]:
            extra, stats = bench["extra_info"], bench["stats"]
            row = {"machine": labels[run.fingerprint], "fingerprint": run.fingerprint, "file": run.path.name,
                   "dtype": extra.get("dtype", "float32"), "execution": extra.get("execution"),
                   "threads": extra.get("threads"), "useful_flops": extra.get("useful_flops"),
                   "traffic_bytes": extra.get("traffic_bytes"), "deterministic": extra.get("deterministic"),
                   "verified": extra.get("verified"), **{k: extra[k] for k in EXTRA},
                   **{k: extra.get(k) for k in CASE_PARAMS if k != "batch"},
                   **{f"{k}_s" if k != "rounds" else k: stats[k] for k in STATS}}  # fmt: skip
            key = tuple(row[k] for k in KEY)
            if key in seen:
                where = dict(zip(KEY, key))
                raise ReportInputError(f"{run.path}: {where} is also measured in {seen[key]}; pass only one")
            seen[key] = run.path
            peaks = run.peaks(row["device"])
            workload = Workload(row["batch"], row["flops"], row["compulsory_bytes"], row["traffic_bytes"])
            try:
                metrics = derived_metrics(workload, row["median_s"], peaks.get("gflops"), peaks.get("gbps"))
            except (ValueError, ZeroDivisionError) as error:
                raise ReportInputError(f"{run.path}: benchmark {bench.get('name', '?')!r}: {error}") from None
            row.update(metrics.as_dict(), peak_gflops=peaks.get("gflops"), peak_gbps=peaks.get("gbps"))
            row["roofline_s"] = row.pop("roofline_seconds")
            del row["seconds"]
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    base = frame[frame["computation"] == BASELINE_PEER].set_index(KEY[:-1])["median_s"]
    frame["speedup"] = [base.get(tuple(r[k] for k in KEY[:-1]), math.nan) / r["median_s"] for _, r in frame.iterrows()]
    order = ["machine", "suite", "case", "kind", "computation", "device", "dtype"]
    return frame.sort_values(order, key=lambda c: _case_order(c) if c.name == "case" else c, ignore_index=True)


def _number(value: object, digits: int = 3) -> str:
    """``digits`` significant digits in plain notation (no exponent), thousands separated; ints as they are."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, numbers.Integral):
        return str(value)
    if value == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:,.{decimals}f}"


def _table(frame: pd.DataFrame, numeric: Iterable[str] = ()) -> str:
    """Markdown table of already formatted cells; numeric columns right-aligned, pipes escaped."""
    if frame.empty:
        return "none"
    shown = frame.astype(object).where(frame.notna(), MISSING).map(lambda v: str(v).replace("|", "\\|"))
    align = ["right" if column in set(numeric) else "left" for column in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def sweep_parameter(frame: pd.DataFrame) -> str | None:
    """The case parameter a sweep suite varies: the only one of SWEEP_PARAMETERS with several values."""
    varying = [p for p in SWEEP_PARAMETERS if p in frame and frame[p].nunique(dropna=True) > 1]
    return varying[0] if len(varying) == 1 else None


def _natural(name: str) -> tuple:
    """Sort key putting "M7" before "M13"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _case_order(cases: pd.Series) -> pd.Series:
    ranks = {name: rank for rank, name in enumerate(sorted(cases.unique(), key=_natural))}
    return cases.map(ranks)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _machines_section(runs: Sequence[Run]) -> str:
    labels, columns = machine_labels(runs), {}
    for run in sorted(runs, key=lambda r: labels[r.fingerprint]):
        m, label = run.machine, labels[run.fingerprint]
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
                rows[f"{name} peak {unit}"] = f"{_number(peaks.get(key))} ({source})"
        rows.update({name: version for name, version in m["software"].items()})
        columns.setdefault(label, {}).update({k: _number(v) for k, v in rows.items()})
    table = pd.DataFrame(columns).rename_axis("").reset_index()
    return _table(table)


def _results_tables(frame: pd.DataFrame) -> list[str]:
    """Per suite: the cases' parameters, then one row per (case, computation, device), a column group per machine."""
    parts, machines = [], sorted(frame["machine"].unique())
    index = ["case", "computation", "kind", "device", "dtype"]
    for suite, rows in frame.groupby("suite", sort=True):
        cases = rows.drop_duplicates(["case"]).sort_values("case", key=_case_order)
        params = cases[["case", *CASE_PARAMS]].copy()
        params["useful GFLOP"] = cases["useful_flops"].map(lambda v: MISSING if pd.isna(v) else _number(v / 1e9))
        parts += [f"### Suite `{suite}`", _table(params)]
        merged = None
        for machine in machines:
            mine = rows[rows["machine"] == machine].set_index(index)
            shown = pd.DataFrame(
                {"threads": mine["threads"].map(lambda v: MISSING if pd.isna(v) else str(int(v)))}
                | {header: (mine[column] * scale).map(_number) for header, column, scale in SHOWN}
            )
            shown["% roofline"] += mine["bound"].map(lambda b: f" ({b})" if isinstance(b, str) else "")
            if len(machines) > 1:
                shown.columns = [f"{machine} {column}" for column in shown.columns]
            merged = shown if merged is None else merged.join(shown, how="outer")
        merged = merged.reset_index().sort_values(
            ["case", "kind", "computation", "device", "dtype"], key=lambda c: _case_order(c) if c.name == "case" else c
        )
        if merged["dtype"].nunique() == 1:
            merged = merged.drop(columns="dtype")
        parts.append(_table(merged, numeric=[c for c in merged.columns if c not in index]))
    return parts


#: The PyTorch ways to compute the SW branches (or their sum): what a fast implementation must beat.
PYTORCH_WAYS = ("rep_merged", "rep_cross", "torch_roll")
SUMMARY_NOTE = (
    "Per case: the fastest implementation that is not one of the PyTorch ways, against the fastest PyTorch way "
    f"to compute the same branches ({', '.join(PYTORCH_WAYS)}). *Roofline limit* is the speedup an implementation "
    "would reach at 100% of the roofline: the fastest PyTorch way's median over the roofline time."
)


def _summary_section(frame: pd.DataFrame) -> list[str]:
    """The fastest implementation per case against the fastest PyTorch way, with the roofline's limit."""
    key = ["machine", "device", "dtype", "suite", "case"]
    rows = []
    for values, group in frame.groupby(key, sort=False):
        mine = group[(group["kind"] == "implementation") & ~group["computation"].isin(PYTORCH_WAYS)]
        ways = group[group["computation"].isin(PYTORCH_WAYS)]
        if mine.empty or ways.empty:
            continue
        best, way = mine.loc[mine["median_s"].idxmin()], ways.loc[ways["median_s"].idxmin()]
        rows.append(dict(zip(key, values)) | {
            "fastest implementation": best["computation"],
            "median ms": _number(best["median_s"] * 1e3),
            "% roofline": _number(best["pct_roofline"]),
            "fastest PyTorch way": way["computation"],
            "its median ms": _number(way["median_s"] * 1e3),
            "speedup": _number(way["median_s"] / best["median_s"]),
            "roofline limit": _number(way["median_s"] / best["roofline_s"]),
        })  # fmt: skip
    if not rows:
        return ["No case has both an implementation and a PyTorch way timed."]
    table = pd.DataFrame(rows).sort_values(key, key=lambda c: _case_order(c) if c.name == "case" else c)
    for column in ("machine", "device", "dtype"):
        if table[column].nunique() == 1:
            table = table.drop(columns=column)
    numeric = ["median ms", "% roofline", "its median ms", "speedup", "roofline limit"]
    return [SUMMARY_NOTE, _table(table, numeric=numeric)]


def _roofline_figure(rows: pd.DataFrame, machine: str, device: str) -> Figure:
    figure = Figure(figsize=(7, 5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    peak, bandwidth = rows["peak_gflops"].iloc[0], rows["peak_gbps"].iloc[0]
    low, high = rows["compulsory_density"].min() / 2, rows["compulsory_density"].max() * 2
    if pd.notna(peak) and pd.notna(bandwidth) and peak and bandwidth:
        ridge = peak / bandwidth
        xs = sorted({min(low, ridge / 2), ridge, max(high, ridge * 2)})
        axes.plot(xs, [x * bandwidth for x in xs], ":", color="grey", linewidth=0.8)
        axes.plot(xs, [min(peak, x * bandwidth) for x in xs], "-", color="black",
                  label=f"roofs: {_number(peak)} GFLOP/s, {_number(bandwidth)} GB/s")  # fmt: skip
    markers = "osD^v<>phX*"
    for number, (name, mine) in enumerate(rows.groupby("computation", sort=True)):
        marker = markers[number % len(markers)]
        axes.plot(mine["compulsory_density"], mine["gflops"], marker, linestyle="none", label=name)
    axes.set(xscale="log", yscale="log", xlabel="compulsory density (FLOP/byte)", ylabel="achieved GFLOP/s",
             title=f"Roofline: {machine} ({device})")  # fmt: skip
    axes.legend(fontsize="small")
    axes.grid(True, which="both", alpha=0.3)
    return figure


def _sweep_figure(rows: pd.DataFrame, suite: str, parameter: str) -> Figure:
    machines = sorted(rows["machine"].unique())
    figure = Figure(figsize=(6 * len(machines), 4.5), dpi=100, layout="constrained")
    for number, machine in enumerate(machines):
        axes = figure.add_subplot(1, len(machines), number + 1)
        mine = rows[rows["machine"] == machine]
        several_devices = mine["device"].nunique() > 1
        for (name, device), line in mine.groupby(["computation", "device"], sort=True):
            line = line.sort_values(parameter)
            label = f"{name} ({device})" if several_devices else name
            axes.plot(line[parameter], line["images_per_s"], "o-", label=label)
        axes.set(yscale="log", xlabel=parameter, ylabel="images/s", title=f"{suite}: {machine}")
        axes.legend(fontsize="small")
        axes.grid(True, which="both", alpha=0.3)
    return figure


def compare(new: pd.DataFrame, base: pd.DataFrame, noise_floor: float = 1.0) -> pd.DataFrame:
    """Results present in both, with median ratio new/base and a verdict against the measured noise:
    'regression' when new q1 > base q3 (interquartile ranges apart, new slower) and the ratio exceeds
    ``noise_floor``, 'improvement' symmetrically, else 'within noise'.

    The IQRs measure the noise within a run. On a shared machine the noise between runs is larger:
    ``noise_floor`` is that between-run noise as a ratio, measured by comparing two runs of the same
    code (an A/A comparison; the section reports its spread so it can be read off)."""
    if not noise_floor >= 1.0:
        raise ValueError(f"noise floor must be a ratio >= 1, got {noise_floor!r}")
    columns = [*KEY, "median_s", "q1_s", "q3_s"]
    both = new[columns].merge(base[columns], on=KEY, suffixes=("_new", "_base"))
    both["ratio"] = both["median_s_new"] / both["median_s_base"]
    both["verdict"] = [
        "regression" if r.q1_s_new > r.q3_s_base and r.ratio > noise_floor
        else "improvement" if r.q3_s_new < r.q1_s_base and r.ratio < 1 / noise_floor
        else "within noise"
        for r in both.itertuples()
    ]  # fmt: skip
    return both.sort_values(KEY, key=lambda c: _case_order(c) if c.name == "case" else c, ignore_index=True)


def _comparison_section(
    new: pd.DataFrame, base: pd.DataFrame, base_runs: Sequence[Run], noise_floor: float
) -> list[str]:
    files = ", ".join(f"`{run.path.name}`" for run in base_runs)
    both = compare(new, base, noise_floor) if not new.empty and not base.empty else pd.DataFrame()
    if both.empty:
        return [f"Baseline {files}: no (machine, device, case, computation) in common with this run"
                " (results compare only on the same machine)."]
    shown = both[[k for k in KEY if k != "dtype" or both[k].nunique() > 1]].copy()
    shown["base median ms"] = (both["median_s_base"] * 1e3).map(_number)
    shown["new median ms"] = (both["median_s_new"] * 1e3).map(_number)
    shown["new/base"] = both["ratio"].map(_number)
    shown["verdict"] = both["verdict"]
    counts = both["verdict"].value_counts()
    summary = ", ".join(f"{v}: {counts.get(v, 0)}" for v in ("regression", "improvement", "within noise"))
    only = f"{len(new) - len(both)} results only in this run, {len(base) - len(both)} only in the baseline."
    spread = math.exp(both["ratio"].map(lambda r: abs(math.log(r))).quantile(0.95))
    rule = (
        "Verdicts: regression when new q1 > base q3 and new/base > the noise floor "
        f"({_number(noise_floor)}); improvement symmetrically. 95% of the ratios here are within "
        f"{_number(spread)}x either way: if the code did not change (an A/A comparison), that is this machine's "
        "between-run noise, to pass as --noise-floor."
    )
    numeric = ["base median ms", "new median ms", "new/base"]
    return [f"Baseline {files}: {summary}. {only} {rule}", _table(shown, numeric)]


RESULTS_NOTE = (
    "Medians and interquartile ranges of the timed call. GFLOP/s counts each computation's own FLOPs (the SW"
    " operator's useful FLOPs for implementations, a peer's own conv FLOPs); GB/s and density use the computation's"
    " traffic model when declared, else compulsory bytes. Speedup vs rep_merged = rep_merged median / this median"
    " on the same case, device and machine. — : not available (no rep_merged result there; no peaks recorded for"
    " the device)."
)


def _runs_table(runs: Sequence[Run]) -> str:
    labels = machine_labels(runs)
    rows = [{"file": r.path.name, "machine": labels[r.fingerprint], "date": r.data.get("datetime", MISSING),
             "tier": r.data["sw"].get("tier", MISSING), "suites": ", ".join(r.data["sw"].get("suites", [])),
             "command": f"`{r.data['sw']['command']}`"} for r in runs]  # fmt: skip
    return _table(pd.DataFrame(rows).sort_values(["machine", "date", "file"]))


def _plots(frame: pd.DataFrame, prefix: str, figures: dict[str, Figure]) -> list[str]:
    """Roofline per (machine, device) and sweep plots; adds the figures, returns the markdown parts."""
    parts = ["## Roofline"]
    for (machine, device), rows in [] if frame.empty else frame.groupby(["machine", "device"], sort=True):
        name = f"{prefix}roofline-{_safe(machine)}-{device}.png"
        figures[name] = _roofline_figure(rows, machine, device)
        roofs = rows[["peak_gflops", "peak_gbps"]].iloc[0].notna().all()
        note = "" if roofs else " (no roofs: peaks not recorded)"
        parts.append(f"![Roofline of {machine} on {device}{note}]({name})")
    parts.append("## Sweeps")
    sweeps = [] if frame.empty else sorted(s for s in frame["suite"].unique() if s.startswith("sweep_"))
    for suite in sweeps:
        rows = frame[frame["suite"] == suite]
        parameter = sweep_parameter(rows)
        if parameter is None:
            parts.append(f"`{suite}`: no single varying parameter among {', '.join(SWEEP_PARAMETERS)}; not plotted.")
            continue
        name = f"{prefix}sweep-{_safe(suite)}.png"
        figures[name] = _sweep_figure(rows, suite, parameter)
        parts.append(f"![{suite}: images/s against {parameter}]({name})")
    return parts if sweeps else [*parts, "none"]


def _listings(runs: Sequence[Run]) -> list[str]:
    """Not run, failures, and the kernels table with its build errors when present."""
    labels, parts = machine_labels(runs), []
    for heading, key, columns in (("Not run", "not_run", ["computation", "device", "reason"]),
                                  ("Failures", "failures", ["computation", "device", "case", "error"])):  # fmt: skip
        entries = [{"machine": labels[r.fingerprint]} | {c: e.get(c) for c in columns}
                   for r in runs for e in r.data["sw"][key]]  # fmt: skip
        listed = pd.DataFrame(entries, columns=["machine", *columns]).drop_duplicates()
        listed = listed.sort_values(["machine", *columns], key=lambda c: c.astype(str))
        parts += [f"## {heading}", _table(listed if len(set(labels.values())) > 1 else listed.drop(columns="machine"))]
    kernels = pd.DataFrame([row for r in runs for row in r.data["sw"].get("kernels") or []])
    errors = sorted({(n, e) for r in runs for n, e in (r.data["sw"].get("kernel_errors") or {}).items()})
    if not kernels.empty or errors:
        parts.append("## GPU kernels (ptxas)")
    if not kernels.empty:
        order = [c for c in ("implementation", "kernel", "arch") if c in kernels]
        kernels = kernels.drop_duplicates().sort_values(order)
        integral = kernels.map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else v)
        parts.append(_table(integral.rename(columns=KERNEL_COLUMNS)))
    return parts + [f"- {name}: kernels did not build: {error}" for name, error in errors]


def render_report(paths: Sequence[Path | str], baseline: Sequence[Path | str] | None = None,
                  title: str | None = None, image_stem: str | None = None, notes: str | None = None,
                  noise_floor: float = 1.0) -> Report:  # fmt: skip
    """Build the markdown and figures. Figures are named ``<image_stem>-<what>.png`` (``<what>.png`` without a stem).
    ``notes`` (markdown, e.g. a profile explaining a shortfall) is included verbatim after the summary."""
    runs = load_runs(paths)
    if not runs:
        raise ReportInputError("no benchmark JSON files given")
    frame, figures = results_frame(runs), {}
    parts = [f"# {title or 'SW operator benchmarks'}", "## Runs", _runs_table(runs),
             "## Machines", _machines_section(runs)]  # fmt: skip
    if not frame.empty:
        parts += ["## Summary", *_summary_section(frame)]
    if notes:
        parts += ["## Notes", notes.strip()]
    parts += ["## Results", RESULTS_NOTE]
    parts += _results_tables(frame) if not frame.empty else ["No benchmark results in these files."]
    parts += _plots(frame, f"{image_stem}-" if image_stem else "", figures)
    parts += _listings(runs)
    if baseline:
        base_runs = load_runs(baseline)
        parts += ["## Comparison with the baseline", *_comparison_section(frame, results_frame(base_runs), base_runs, noise_floor)]
    return Report("\n\n".join(parts) + "\n", figures)


def write_report(paths: Sequence[Path | str], output: Path | str, baseline: Sequence[Path | str] | None = None,
                 overwrite: bool = False, title: str | None = None, notes: str | None = None,
                 noise_floor: float = 1.0) -> list[Path]:  # fmt: skip
    """Write the markdown to ``output`` and its PNGs beside it; return the files written (markdown first).
    Nothing is written if rendering fails or, without ``overwrite``, if any target already exists."""
    output = Path(output)
    report = render_report(paths, baseline, title, image_stem=output.stem, notes=notes, noise_floor=noise_floor)
    images = {output.parent / name: figure for name, figure in report.figures.items()}
    targets = [output, *images]
    if not overwrite:
        for target in targets:
            if target.exists():
                raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    for path, figure in images.items():
        replace_atomically(path, lambda h, f=figure: f.savefig(h, format="png", metadata={"Software": None}))
    write_text_atomically(output, report.markdown)  # last: it only appears with its images
    return targets
