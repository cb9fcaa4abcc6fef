"""The results as one pandas frame: a row per (run, device, dtype, suite, case, computation),
every figure derived once, here, from the stored counts, the timing statistics and the run's
own peaks (``harness.perf.derived_metrics``); and the comparison of two such frames."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import pandas as pd

from harness.perf import Workload, derived_metrics
from harness.registry import Role
from harness.report.load import STATS, ReportInputError, Run, run_labels, same_peaks

SWEEP_PARAMETERS = ("big_kernel", "groups", "sparsity", "small_kernel")
#: identifies one measurement; results merge on it
KEY = ["machine", "device", "dtype", "suite", "case", "computation"]
#: what a comparison with a baseline matches on: the same machine (not its label, which names the run)
COMPARE_KEY = ["fingerprint", "device", "dtype", "suite", "case", "computation"]
CASE_PARAMS = ("batch", "channels", "height", "width", "big_kernel", "small_kernel", "groups", "nk", "sparsity",
               "tables")  # fmt: skip
#: role order in tables: implementations first, then the PyTorch ways, the lower-precision rows, other operators
ROLE_ORDER = {Role.IMPLEMENTATION.value: 0, Role.PYTORCH_WAY.value: 1, Role.LOWER_PRECISION.value: 2, Role.OTHER_OPERATOR.value: 3}


def results_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per measurement, metrics recomputed; ``speedup`` against the declared baseline."""
    labels, rows, seen = run_labels(runs), [], {}
    for run in runs:
        for number, (row, stats) in enumerate(run.rows()):
            record = dataclasses.asdict(row) | {
                "machine": labels[run.path], "fingerprint": run.fingerprint, "file": run.path.name,
                **{f"{k}_s" if k != "rounds" else k: stats[k] for k in STATS},
            }  # fmt: skip
            key = tuple(record[k] for k in KEY)
            if key in seen:
                raise ReportInputError(f"{run.path}: {dict(zip(KEY, key))} is also measured in {seen[key]}; pass only one")
            seen[key] = run.path
            peaks = run.peaks(row.device)
            record.update(_metrics(row, record["median_s"], peaks, run.path, number))
            rows.append(record)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    base = frame[frame["baseline"]].set_index(KEY[:-1])["median_s"]
    frame["speedup"] = [base.get(tuple(r[k] for k in KEY[:-1]), math.nan) / r["median_s"] for _, r in frame.iterrows()]
    frame["role_rank"] = frame["role"].map(ROLE_ORDER)
    order = ["machine", "suite", "case", "role_rank", "computation", "device", "dtype"]
    return frame.sort_values(order, key=lambda c: case_order(c) if c.name == "case" else c, ignore_index=True)


def _metrics(row, median: float, peaks: dict, path, number: int) -> dict:
    """Figures of the computation's own work (its executed FLOPs) and of the operator's useful
    work (the same for every computation of a case: what the summary's roofline limits use)."""
    gflops, gbps = peaks.get("gflops"), peaks.get("gbps")
    try:
        own = derived_metrics(Workload(row.batch, row.flops, row.compulsory_bytes, row.traffic_bytes), median, gflops, gbps)
        useful = derived_metrics(Workload(row.batch, row.useful_flops, row.compulsory_bytes, None), median, gflops, gbps)
    except (ValueError, ZeroDivisionError) as error:
        raise ReportInputError(f"{path}: benchmark #{number} ({row.computation} on {row.case}): {error}") from None
    values = own.as_dict()
    del values["seconds"]
    values["roofline_s"] = values.pop("roofline_seconds")
    values["useful_roofline_s"] = useful.roofline_seconds
    values["useful_pct_roofline"] = useful.pct_roofline
    values.update(peak_gflops=gflops, peak_gbps=gbps)
    return values


def sweep_parameter(frame: pd.DataFrame, suite: str | None = None) -> str | None:
    """The case parameter a sweep suite varies: the one its name gives (``sweep_<parameter>``),
    else the only one of SWEEP_PARAMETERS with several values."""
    named = suite.removeprefix("sweep_") if suite else None
    if named in SWEEP_PARAMETERS and named in frame and frame[named].nunique(dropna=True) > 1:
        return named
    varying = [p for p in SWEEP_PARAMETERS if p in frame and frame[p].nunique(dropna=True) > 1]
    return varying[0] if len(varying) == 1 else None


def natural(name: str) -> tuple:
    """Sort key putting "M7" before "M13"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def case_order(cases: pd.Series) -> pd.Series:
    ranks = {name: rank for rank, name in enumerate(sorted(cases.unique(), key=natural))}
    return cases.map(ranks)


def compare(new: pd.DataFrame, base: pd.DataFrame, noise_floor: float = 1.0,
            new_runs: Sequence[Run] = (), base_runs: Sequence[Run] = ()) -> pd.DataFrame:  # fmt: skip
    """Results present in both (same machine, device, dtype, suite, case, computation), with the
    median ratio new/base and a verdict: 'regression' when new q1 > base q3 (interquartile ranges
    apart, new slower) and the ratio exceeds ``noise_floor``, 'improvement' symmetrically, else
    'within noise'; 'probes differ' when the two runs' probed peaks for that device differ by more
    than the noise floor (at least 10%): the machine was not in the same state, so a change of
    time there is not attributed to the code.

    The IQRs measure the noise within a run. On a shared machine the noise between runs is larger:
    ``noise_floor`` is that between-run noise as a ratio, measured by comparing two runs of the same
    code (an A/A comparison; the section reports its spread so it can be read off)."""
    if not noise_floor >= 1.0:
        raise ValueError(f"noise floor must be a ratio >= 1, got {noise_floor!r}")
    columns = [*COMPARE_KEY, "machine", "file", "median_s", "q1_s", "q3_s"]
    both = new[columns].merge(base[columns], on=COMPARE_KEY, suffixes=("_new", "_base"))
    both["ratio"] = both["median_s_new"] / both["median_s_base"]
    runs = {run.path.name: run for run in [*new_runs, *base_runs]}
    tolerance = max(noise_floor, 1.10)

    def verdict(r) -> str:
        first, second = runs.get(r.file_new), runs.get(r.file_base)
        if first is not None and second is not None and not same_peaks(first.peaks(r.device), second.peaks(r.device), tolerance):
            return "probes differ"
        if r.q1_s_new > r.q3_s_base and r.ratio > noise_floor:
            return "regression"
        if r.q3_s_new < r.q1_s_base and r.ratio < 1 / noise_floor:
            return "improvement"
        return "within noise"

    both["verdict"] = [verdict(r) for r in both.itertuples()]
    both = both.rename(columns={"machine_new": "machine"}).drop(columns=["machine_base"])
    return both.sort_values(COMPARE_KEY, key=lambda c: case_order(c) if c.name == "case" else c, ignore_index=True)
