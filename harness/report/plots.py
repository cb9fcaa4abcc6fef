"""The report's figures: a roofline per (run, device) and a plot per sweep suite."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from harness.report.format import number


def roofline_figure(rows: pd.DataFrame, machine: str, device: str) -> Figure:
    figure = Figure(figsize=(7, 5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    peak, bandwidth = rows["peak_gflops"].iloc[0], rows["peak_gbps"].iloc[0]
    low, high = rows["compulsory_density"].min() / 2, rows["compulsory_density"].max() * 2
    if pd.notna(peak) and pd.notna(bandwidth) and peak and bandwidth:
        ridge = peak / bandwidth
        xs = sorted({min(low, ridge / 2), ridge, max(high, ridge * 2)})
        axes.plot(xs, [x * bandwidth for x in xs], ":", color="grey", linewidth=0.8)
        axes.plot(xs, [min(peak, x * bandwidth) for x in xs], "-", color="black",
                  label=f"roofs: {number(peak)} GFLOP/s, {number(bandwidth)} GB/s")  # fmt: skip
    markers = "osD^v<>phX*P"
    for index, (name, mine) in enumerate(rows.groupby("computation", sort=True)):
        axes.plot(mine["compulsory_density"], mine["gflops"], markers[index % len(markers)], linestyle="none", label=name)
    axes.set(xscale="log", yscale="log", xlabel="compulsory density (FLOP/byte)", ylabel="achieved GFLOP/s",
             title=f"Roofline: {machine} ({device})")  # fmt: skip
    axes.legend(fontsize="small")
    axes.grid(True, which="both", alpha=0.3)
    return figure


def sweep_figure(rows: pd.DataFrame, suite: str, parameter: str, facets: list[str]) -> Figure:
    """images/s against ``parameter``, a panel per (machine, facet): the facets are the other
    case parameters' combinations (e.g. one panel per SW-tiny stage of a sparsity sweep)."""
    groups = list(rows.groupby(["machine", *facets], sort=True)) if facets else list(rows.groupby(["machine"], sort=True))
    figure = Figure(figsize=(6 * min(len(groups), 4), 4.5 * -(-len(groups) // 4)), dpi=100, layout="constrained")
    for index, (values, mine) in enumerate(groups):
        axes = figure.add_subplot(-(-len(groups) // 4), min(len(groups), 4), index + 1)
        values = values if isinstance(values, tuple) else (values,)
        several_devices = mine["device"].nunique() > 1
        for (name, device), line in mine.groupby(["computation", "device"], sort=True):
            line = line.sort_values(parameter)
            label = f"{name} ({device})" if several_devices else name
            axes.plot(line[parameter], line["images_per_s"], "o-", label=label)
        title = f"{suite}: {values[0]}"
        if facets:
            title += "\n" + ", ".join(f"{f}={v}" for f, v in zip(facets, values[1:]))
        axes.set(yscale="log", xlabel=parameter, ylabel="images/s", title=title)
        axes.legend(fontsize="small")
        axes.grid(True, which="both", alpha=0.3)
    return figure
