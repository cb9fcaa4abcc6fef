"""Markdown report with PNG plots from saved benchmark JSON (``pytest --benchmark-only
--benchmark-json=FILE``: pytest-benchmark plus this project's ``sw`` keys; ``swbench report``).

Read top-down: ``load`` reads and validates the runs (a row per benchmark is a
``harness.results.BenchmarkRow``) and names them; ``frame`` puts the rows in one pandas frame
and derives every figure once, from the stored counts, the timing statistics and the run's own
probed peaks (derived values stored in a JSON are never used); ``sections`` renders the tables,
``plots`` the figures; this module assembles and writes them.

Roles are declared by the computations themselves (an SW implementation, a PyTorch way, another
operator; one computation declares itself the speed baseline): the report groups by them and
never by name. The same input always gives the same markdown, byte for byte, and the same PNGs:
rows are sorted, numbers formatted to fixed significant digits, and nothing records when the
report was made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.files import replace_atomically, same_file, write_text_atomically
from harness.report import sections
from harness.report.format import safe
from harness.report.frame import SWEEP_PARAMETERS, CASE_PARAMS, compare, results_frame, sweep_parameter
from harness.report.load import ReportInputError, Run, load_kernels, load_runs, run_labels
from harness.report.plots import roofline_figure, sweep_figure

__all__ = ["ReportInputError", "Run", "Report", "load_runs", "results_frame", "run_labels", "sweep_parameter",
           "compare", "render_report", "write_report"]  # fmt: skip


@dataclass
class Report:
    markdown: str
    #: PNG file name -> figure; the markdown links to these names
    figures: dict[str, Figure] = field(default_factory=dict)


def _plots(frame, prefix: str, figures: dict[str, Figure]) -> list[str]:
    """Roofline per (run, device) and sweep plots; adds the figures, returns the markdown parts."""
    parts = ["## Roofline"]
    for (machine, device), rows in [] if frame.empty else frame.groupby(["machine", "device"], sort=True):
        name = f"{prefix}roofline-{safe(machine)}-{device}.png"
        figures[name] = roofline_figure(rows, machine, device)
        roofs = rows[["peak_gflops", "peak_gbps"]].iloc[0].notna().all()
        note = "" if roofs else " (no roofs: peaks not recorded)"
        parts.append(f"![Roofline of {machine} on {device}{note}]({name})")
    parts.append("## Sweeps")
    sweeps = [] if frame.empty else sorted(s for s in frame["suite"].unique() if s.startswith("sweep_"))
    for suite in sweeps:
        rows = frame[frame["suite"] == suite]
        parameter = sweep_parameter(rows, suite)
        if parameter is None:
            parts.append(f"`{suite}`: no single varying parameter among {', '.join(SWEEP_PARAMETERS)}; not plotted.")
            continue
        # nk follows from M and k: never a facet of its own
        facets = [p for p in CASE_PARAMS if p not in (parameter, "nk") and p in rows and rows[p].nunique(dropna=True) > 1]
        if suite.removeprefix("sweep_") != parameter and facets:
            parts.append(f"`{suite}`: no single varying parameter among {', '.join(SWEEP_PARAMETERS)}; not plotted.")
            continue
        borrowed = _same_layers(frame, rows, suite, parameter)
        name = f"{prefix}sweep-{safe(suite)}.png"
        figures[name] = sweep_figure(pd.concat([rows, borrowed]), suite, parameter, facets)
        by = f", a panel per {', '.join(facets)}" if facets else ""
        also = ""
        if not borrowed.empty:
            also = f" (with the same layers' {parameter} = {', '.join(sorted({str(v) for v in borrowed[parameter]}))} from {', '.join(sorted(borrowed['suite'].unique()))})"
        parts.append(f"![{suite}: images/s against {parameter}{by}]({name}){also}")
    return parts if sweeps else [*parts, "none"]


def _same_layers(frame, rows, suite: str, parameter: str):
    """Results of other suites on the sweep's own layers, differing only in the swept parameter
    (e.g. sparsity 0 of each SW-tiny stage, timed once in sw_tiny), so a sweep needs not time
    a case twice."""
    others = [p for p in CASE_PARAMS if p != parameter and p in frame]
    layers = {tuple(r) for r in rows[["machine", "device", "dtype", *others]].itertuples(index=False)}
    candidates = frame[(frame["suite"] != suite) & ~frame[parameter].isin(rows[parameter].unique())]
    keep = [tuple(r) in layers for r in candidates[["machine", "device", "dtype", *others]].itertuples(index=False)]
    return candidates[keep]


def render_report(paths: Sequence[Path | str], baseline: Sequence[Path | str] | None = None,
                  title: str | None = None, image_stem: str | None = None, notes: str | None = None,
                  noise_floor: float = 1.0, kernels: Path | str | None = None) -> Report:  # fmt: skip
    """Build the markdown and figures. Figures are named ``<image_stem>-<what>.png`` (``<what>.png`` without a stem).
    ``notes`` (markdown, e.g. a profile explaining a shortfall) is included verbatim after the summary;
    ``kernels`` is ``swbench kernels --json``'s file, listed with the runs."""
    runs = load_runs(paths)
    kernels_file = load_kernels(kernels)
    if not runs:
        raise ReportInputError("no benchmark JSON files given")
    frame, figures = results_frame(runs), {}
    parts = [f"# {title or 'SW operator benchmarks'}", "## Runs", sections.runs_table(runs),
             "## Machines", sections.machines_section(runs)]  # fmt: skip
    if not frame.empty:
        parts += ["## Summary", *sections.summary_section(frame, _layer_comparisons(runs))]
    parts += _table7(runs)
    if notes:
        parts += ["## Notes", notes.strip()]
    parts += ["## Results"]
    descriptions = {k: v for run in runs for k, v in (run.data["sw"].get("suite_descriptions") or {}).items()}
    parts += sections.results_tables(frame, descriptions) if not frame.empty else ["No benchmark results in these files."]
    parts += _plots(frame, f"{image_stem}-" if image_stem else "", figures)
    parts += sections.listings(runs, kernels_file)
    if baseline:
        base_runs = load_runs(baseline)
        parts += ["## Comparison with the baseline",
                  *sections.comparison_section(frame, results_frame(base_runs), runs, base_runs, noise_floor)]  # fmt: skip
    return Report("\n\n".join(parts) + "\n", figures)


def _layer_comparisons(runs: Sequence[Run]) -> dict[tuple, object]:
    """Each layer comparison row by (machine label, device, dtype, suite, case, form): the summary's key."""
    labels = run_labels(runs)
    return {(labels[run.path], row.device, row.dtype, row.suite, row.case, row.form): row
            for run in runs for row in run.layer_comparison_rows()}  # fmt: skip


def _table7(runs: Sequence[Run]) -> list[str]:
    """The model-level section (Table 7 on this machine), when the runs have network benchmarks:
    a row per network benchmark (its row, median and run label; GFLOP per image derived here)
    and the comparison rows (paired ratios), rendered by the networks' own section
    (``harness.models.table7``)."""
    labels = run_labels(runs)
    rows = [
        {"kind": "model", **dataclasses.asdict(row), "gflop_per_image": row.flops / row.batch / 1e9,
         "median_s": stats["median"], "machine": labels[run.path], "file": run.path.name}
        for run in runs
        for row, stats in run.network_rows()
    ]  # fmt: skip
    rows += [
        {"kind": "training", **dataclasses.asdict(row), "median_s": stats["median"], "machine": labels[run.path], "file": run.path.name}
        for run in runs
        for row, stats in run.training_rows()
    ]  # fmt: skip
    comparisons = [(labels[run.path], row) for run in runs for row in run.comparison_rows()]
    if not rows and not comparisons:
        return []
    from harness.models.table7 import table7_section  # networks (and timm-like layers) only when needed

    return table7_section(pd.DataFrame(rows), comparisons)


def write_report(paths: Sequence[Path | str], output: Path | str, baseline: Sequence[Path | str] | None = None,
                 overwrite: bool = False, title: str | None = None, notes: str | None = None,
                 noise_floor: float = 1.0, kernels: Path | str | None = None) -> list[Path]:  # fmt: skip
    """Write the markdown to ``output`` and its PNGs beside it; return the files written (markdown first).
    Nothing is written if rendering fails or, without ``overwrite``, if any target already exists."""
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(f"--output: expected the path of the markdown file to write, got the folder {output}")
    _refuse_overwriting_inputs([output], [*paths, *(baseline or ())])
    report = render_report(paths, baseline, title, image_stem=output.stem, notes=notes, noise_floor=noise_floor, kernels=kernels)
    images = {output.parent / name: figure for name, figure in report.figures.items()}
    targets = [output, *images]
    _refuse_overwriting_inputs(targets, [*paths, *(baseline or ())])
    if not overwrite:
        for target in targets:
            if target.exists():
                raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    for path, figure in images.items():
        replace_atomically(path, lambda h, f=figure: f.savefig(h, format="png", metadata={"Software": None}), overwrite=overwrite)
    write_text_atomically(output, report.markdown, overwrite=overwrite)  # last: it only appears with its images
    return targets


def _refuse_overwriting_inputs(targets: Sequence[Path], inputs: Sequence[Path | str]) -> None:
    """A report never replaces a run it reads, whatever ``overwrite`` says."""
    for target in targets:
        for source in inputs:
            if same_file(target, Path(source)):
                raise ReportInputError(f"--output: {target} is the input {source}; write the report to another file")
