"""The report's "Table 7 on this machine" section: model throughput here beside the paper's A100.

``PAPER_A100`` holds the supplementary's Table 7 (A100-80GB, PyTorch 2.0.0 + cuDNN, FP32,
224x224). The figures are the batch-128 entries of the official throughput run,
lidc54/shift-wiseConv ``throughout/a100fps.json`` (SW: ``N_path=1, N_rep=4`` and the timing
script's ``kernel_size=[51, 49, 47, 13, 5]``; SLaK: ``slak_general`` for the plain PyTorch rows,
``slak_gemm`` for RepLKNet's iGEMM large-kernel conv; UniRepLKNet: after ``reparameterize()``),
rounded as the table prints them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.models.networks import NETWORKS
from harness.results import ComparisonRow

#: network name -> (Table 7's row label, A100 images/s). Kept in the repository: nothing reads
#: the paper at run time.
PAPER_A100: dict[str, tuple[str, float]] = {
    "sw_tiny": ("SW-tiny", 378),
    "slak_tiny_rep_igemm": ("SLaK-T Rep, RepLKNet's iGEMM conv (★)", 638),
    "unireplknet_tiny": ("UniRepLKNet-T", 1125),
    "slak_tiny": ("SLaK-T", 371),
    "slak_tiny_rep": ("SLaK-T Rep", 174),
    "sw_small": ("SW-small", 243),
    "slak_small_rep_igemm": ("SLaK-S Rep, RepLKNet's iGEMM conv (★)", 385),
    "unireplknet_small": ("UniRepLKNet-S", 689),
    "slak_small": ("SLaK-S", 217),
    "slak_small_rep": ("SLaK-S Rep", 108),
}
PAPER_BATCH = 128
#: Ratios the paper discusses: SW-tiny against these (the paper: "about 3/5 and 1/3").
RATIOS = (("sw_tiny", "slak_tiny"), ("sw_tiny", "unireplknet_tiny"), ("sw_small", "slak_small"),
          ("sw_small", "unireplknet_small"))  # fmt: skip


def _images_per_s(rows: pd.DataFrame) -> pd.Series:
    """Derived here, once, from the median (a value stored in an older JSON is not used)."""
    return rows["batch"] / rows["median_s"]


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table7_section(frame: pd.DataFrame, comparisons: Sequence[tuple[str | None, ComparisonRow]] = ()) -> list[str]:
    """Markdown parts of the "Table 7 on this machine" section from the report's rows (one per
    benchmark; model rows have ``kind == "model"``) and the comparison rows, each with its run's
    machine label, or [] when there are none.

    One table per machine and batch size: a row per network and, for SW networks, per
    implementation, with images/s here and the paper's A100 images/s (batch 128) beside it; then
    the ratios the paper discusses (SW against SLaK and UniRepLKNet), with SW's fastest
    implementation, from the independent medians here and on the A100; then, where the run has
    the comparison (``harness.models.compare``), each ratio from the paired interleaved rounds
    with its interval."""
    empty = frame is None or frame.empty or "kind" not in frame
    if empty and not comparisons:
        return []
    frame = pd.DataFrame({"kind": []}) if empty else frame
    training = frame[frame["kind"] == "training"].copy()
    rows = frame[frame["kind"] == "model"].copy()
    if rows.empty and not comparisons:
        return training_section(training) if not training.empty else []
    rows["images_per_s"] = _images_per_s(rows) if not rows.empty else []
    if not training.empty:
        training["images_per_s"] = _images_per_s(training)
    machines = list(rows["machine"].unique()) if "machine" in rows else ([] if rows.empty else [None])
    machines += [m for m, _ in comparisons if m not in machines]
    parts = [
        "## Table 7 on this machine",
        "Images per second of whole networks at 224x224 (`pytest --benchmark-only --suite models`), each SW "
        "implementation plugged into the same SW network, beside the paper's A100 figures (supplementary Table 7: "
        f"A100-80GB, FP32, batch {PAPER_BATCH}). SW networks are verified in float64 against the reference path "
        "before timing. *SW share* is the fraction of a forward pass spent in the SW layers (for a peer: its "
        "large-kernel layers). \"Rep\" rows are the merged (deployed) forms.",
    ]
    for machine in machines:
        here = rows if machine is None or rows.empty else rows[rows["machine"] == machine]
        paired_here = [c for m, c in comparisons if m == machine]
        for batch in sorted({*(here["batch"].unique() if "batch" in here else ()), *(c.batch for c in paired_here)}):
            at = here[here["batch"] == batch] if "batch" in here else here
            title = f"### {machine}, batch {batch}" if machine is not None else f"### Batch {batch}"
            parts.append(title)
            if not at.empty:
                parts += _networks_table(at, training, machine)
            parts += paired_section([c for c in paired_here if c.batch == batch])
    present = set(rows["network"] if not rows.empty else []) | {n for _, c in comparisons for n in c.networks.values()}
    missing = [label for name, (label, _) in PAPER_A100.items() if name not in present and not name.endswith("_igemm")]
    if missing:
        parts.append("Paper rows not in this run: " + ", ".join(missing) + " (the full tier runs them).")
    parts.append("The ★ rows (SLaK with RepLKNet's iGEMM CUDA large-kernel conv: 638 and 385 images/s on the "
                 "A100) have no counterpart here.")
    if not training.empty:
        parts += training_section(training)
    return parts


def _networks_table(at: pd.DataFrame, training: pd.DataFrame, machine: object) -> list[str]:
    """The networks of one machine and batch, then their ratios from the independent medians."""
    table = []
    for _, row in at.sort_values(["network", "computation"]).iterrows():
        info = NETWORKS.get(row["network"])
        paper = PAPER_A100.get(row["network"])
        table.append({
            "network": info.label if info else row["network"],
            "implementation": _fmt(row.get("implementation")),
            "images/s here": _fmt(float(row["images_per_s"])),
            "A100 images/s (paper)": f"{paper[1]:.0f}" if paper else "—",
            "GFLOP/image": _fmt(float(row["gflop_per_image"])) if "gflop_per_image" in row else "—",
            "params (M)": _fmt(row["params"] / 1e6) if "params" in row else "—",
            "SW share": _fmt(float(row["sw_time_share"]), 2) if "sw_time_share" in row else "—",
            "training images/s here": _training_beside(training, machine, row),
            "threads": _fmt(row.get("threads")),
        })  # fmt: skip
    return [pd.DataFrame(table).to_markdown(index=False), _ratios(at)]


def paired_section(comparisons: Sequence[ComparisonRow]) -> list[str]:
    """The ratios of the interleaved comparisons (one machine and batch): a row per ratio with
    its interval, then each compared network's images/s (median over the rounds) and what was
    left out (a failure, or not run here), or [] when there are none."""
    if not comparisons:
        return []
    lines, speeds, left = [], [], []
    for row in sorted(comparisons, key=lambda c: c.case):
        for entry in row.ratios:
            top, bottom = row.networks[entry.numerator], row.networks[entry.denominator]
            paper = f"{PAPER_A100[top][1] / PAPER_A100[bottom][1]:.2f}" if top in PAPER_A100 and bottom in PAPER_A100 else "—"
            lines.append(f"| {_label(top)} / {_label(bottom)} | {row.case} | {row.implementation} | {entry.ratio:.3g} | "
                         f"{entry.low:.3g} – {entry.high:.3g} | {entry.rounds} | {paper} |")  # fmt: skip
        for name, times in row.times.items():
            impl = row.implementation if NETWORKS[row.networks[name]].family == "sw" and not NETWORKS[row.networks[name]].rep else "—"
            speeds.append(f"| {row.case} | {_label(row.networks[name])} | {impl} | {_fmt(row.batch / float(np.median(times)))} |")
        left += [f"- {row.case}: {name} failed, not compared: {error}" for name, error in sorted(row.failed.items())]
        left += [f"- {row.case}: {name} not run here: {why}" for name, why in sorted(row.not_run.items())]
    confidence = {f"{e.confidence:.0%}" for row in comparisons for e in row.ratios}
    parts = [
        "Paired ratios (images/s over images/s) from the interleaved comparison: each timed round runs every "
        "network of the comparison once, in a fresh random order, so that all see the same load; the ratio is the "
        "geometric mean of the per-round ratios, with a bootstrap interval over rounds "
        f"({', '.join(sorted(confidence)) or '—'}). On a shared machine these hold where ratios of independent medians may not.",
    ]
    if lines:
        parts.append("\n".join(["| paired ratio | SW case | SW implementation | here | interval | rounds | A100 (paper) |",
                                "|---|---|---|---|---|---|---|", *lines]))  # fmt: skip
    if speeds:
        parts.append("\n".join(["| SW case | network | implementation | images/s (median of the interleaved rounds) |",
                                "|---|---|---|---|", *speeds]))  # fmt: skip
    return parts + (["Left out of the comparisons:\n" + "\n".join(left)] if left else [])


def _label(network: str) -> str:
    return NETWORKS[network].label if network in NETWORKS else network


def _training_beside(training: pd.DataFrame, machine: object, row: pd.Series) -> str:
    """The training column of an inference row: images/s of the same network (its training
    form: a "_rep" row has none) with the same implementation on the same machine, per
    training batch ("12.3 (b8)"), or "—"."""
    if training.empty:
        return "—"
    same = training[(training["network"] == row["network"]) & (training["computation"] == row["computation"])]
    if machine is not None and "machine" in same:
        same = same[same["machine"] == machine]
    return ", ".join(f"{_fmt(float(r['images_per_s']))} (b{r['batch']})" for _, r in same.sort_values("batch").iterrows()) or "—"


def training_section(training: pd.DataFrame) -> list[str]:
    """Markdown parts for the training steps (``--suite training``): per machine and batch, a
    row per network and SW implementation with images/s of a training step (forward,
    cross-entropy, backward, AdamW) and whose backward ran through the SW layers; then SW's
    ratios against SLaK and UniRepLKNet (their training forms)."""
    training = training.copy()
    training["images_per_s"] = _images_per_s(training)
    parts = [
        "### Training steps",
        "Images per second of a training step (forward, cross-entropy, backward, AdamW step) of each network in its "
        "training form (not reparameterized, train mode) at 224x224 (`pytest --benchmark-only --suite training`). "
        "*backward* says whose backward ran through the SW layers: the implementation's own, or the reference's "
        "(autograd of the merged depthwise convs). SW networks' gradients are verified in float64 against the same "
        "network on the reference path before timing. The paper gives no training throughput.",
    ]
    machines = training["machine"].unique() if "machine" in training else [None]
    for machine in machines:
        here = training if machine is None else training[training["machine"] == machine]
        for batch in sorted(here["batch"].unique()):
            at = here[here["batch"] == batch]
            table = [{
                "network": NETWORKS[r["network"]].label if r["network"] in NETWORKS else r["network"],
                "implementation": _fmt(r.get("implementation")),
                "backward": _fmt(r.get("backward")) if r.get("implementation") else "—",
                "training images/s here": _fmt(float(r["images_per_s"])),
                "params (M)": _fmt(r["params"] / 1e6) if "params" in r else "—",
                "threads": _fmt(r.get("threads")),
            } for _, r in at.sort_values(["network", "computation"]).iterrows()]  # fmt: skip
            title = f"#### Training, {machine}, batch {batch}" if machine is not None else f"#### Training, batch {batch}"
            parts += [title, pd.DataFrame(table).to_markdown(index=False)]
            lines = []
            for numerator, denominator in RATIOS:
                top, bottom = best_images_per_s(at, numerator), best_images_per_s(at, denominator)
                if top is not None and bottom is not None:
                    impl = f" (SW: {top[1]})" if top[1] else ""
                    lines.append(f"| {NETWORKS[numerator].label} / {NETWORKS[denominator].label} | {top[0] / bottom[0]:.3g}{impl} |")
            if lines:
                parts.append("\n".join(["| training ratio | here |", "|---|---|", *lines]))
    return parts


def best_images_per_s(rows: pd.DataFrame, network: str) -> tuple[float, str | None] | None:
    """(images/s, implementation) of ``network``'s fastest run in ``rows``, or None."""
    chosen = rows[rows["network"] == network]
    if chosen.empty:
        return None
    best = chosen.loc[chosen["images_per_s"].idxmax()]
    return float(best["images_per_s"]), best.get("implementation")


def _ratios(rows: pd.DataFrame) -> str:
    lines = []
    for numerator, denominator in RATIOS:
        top, bottom = best_images_per_s(rows, numerator), best_images_per_s(rows, denominator)
        paper = PAPER_A100[numerator][1] / PAPER_A100[denominator][1]
        label = f"{NETWORKS[numerator].label} / {NETWORKS[denominator].label}"
        if top is None or bottom is None:
            continue
        impl = f" (SW: {top[1]})" if top[1] else ""
        lines.append(f"| {label} | {top[0] / bottom[0]:.3g}{impl} | {paper:.2f} |")
        rep = best_images_per_s(rows, f"{numerator}_rep")
        if rep is not None:
            lines.append(f"| {NETWORKS[numerator + '_rep'].label} / {NETWORKS[denominator].label} | {rep[0] / bottom[0]:.3g} | — |")
    if not lines:
        return "Ratios: not enough networks in this run."
    return "\n".join(["| ratio (independent medians) | here | A100 (paper) |", "|---|---|---|", *lines])


__all__ = ["PAPER_A100", "PAPER_BATCH", "RATIOS", "best_images_per_s", "paired_section", "table7_section", "training_section"]
