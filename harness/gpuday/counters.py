"""ncu's numbers beside the faithful estimates (``harness.cudac.faithful.counter_estimates``):
what the counters phase writes, metric by metric, measured / estimated.

``parse_ncu`` reads ncu's raw CSV page (``--csv --page raw``: a header row, a units row, a row
per kernel launch) into base units; ``compare`` matches each estimated kernel to the launches
whose ncu name contains it (the numba kernels' names are mangled around theirs) and averages
them; ``markdown`` renders the comparison.
"""

from __future__ import annotations

import csv
import math
import re

#: The stage ncu profiles in the counters phase, and the machine whose estimates are set beside it.
COUNTERS_STAGE, COUNTERS_MACHINE = "tiny-s3-b64", "H200"
#: Unit prefixes ncu prints, to base units (bytes, seconds, counts); "%" stays a percentage.
_SCALE = {"": 1, "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KByte": 1e3, "MByte": 1e6, "GByte": 1e9,
          "nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9, "%": 1, "K": 1e3, "M": 1e6, "G": 1e9}  # fmt: skip
#: Times are kept in nanoseconds (ncu's default unit for gpu__time_duration).
_TIME_UNITS = ("nsecond", "usecond", "msecond", "second")


def _number(text: str) -> float | None:
    text = text.strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def parse_ncu(text: str) -> list[dict]:
    """One dict per profiled launch: ``kernel`` (ncu's Kernel Name) and every numeric metric in
    base units (bytes, nanoseconds, counts, percentages); a unit it does not know leaves the
    metric out rather than guessing."""
    rows = list(csv.reader(line for line in text.splitlines() if line.startswith('"')))
    if len(rows) < 3:
        return []
    header, units, body = rows[0], rows[1], rows[2:]
    launches = []
    for row in body:
        launch = {"kernel": dict(zip(header, row)).get("Kernel Name", "?")}
        for name, unit, value in zip(header, units, row):
            number = _number(value)
            if number is None or "__" not in name or unit not in _SCALE:
                continue
            launch[name] = number * _SCALE[unit]
        launches.append(launch)
    return launches


def _matches(kernel: str, ncu_name: str) -> bool:
    return re.search(rf"(^|[^A-Za-z0-9_]){re.escape(kernel)}($|[^A-Za-z0-9_])", ncu_name) is not None


def _measured(metric: str, launches: list[dict]) -> float | None:
    if metric == "dram__bytes.sum":  # the estimate is of reads and writes together
        values = [l["dram__bytes_read.sum"] + l["dram__bytes_write.sum"] for l in launches
                  if "dram__bytes_read.sum" in l and "dram__bytes_write.sum" in l]  # fmt: skip
    else:
        values = [l[metric] for l in launches if metric in l]
    return sum(values) / len(values) if values else None


def compare(measured: list[dict], estimated: list[dict]) -> list[dict]:
    """A row per (estimated kernel, metric): measured (the mean over the launches ncu recorded
    of that kernel; None when it recorded none), estimated, and measured / estimated."""
    from harness.cudac.faithful import COUNTER_METRICS

    rows = []
    for estimate in estimated:
        launches = [l for l in measured if _matches(estimate["kernel"], l["kernel"])]
        for metric, meaning in COUNTER_METRICS.items():
            got, guess = _measured(metric, launches), estimate.get(metric)
            ratio = got / guess if got is not None and guess not in (None, 0) and not math.isnan(guess) else None
            rows.append({"implementation": estimate["implementation"], "kernel": estimate["kernel"], "case": estimate["case"],
                         "machine": estimate["machine"], "metric": metric, "estimate is": meaning, "launches": len(launches),
                         "measured": got, "estimated": guess, "measured / estimated": ratio})  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "No comparison: no estimates.\n"
    import pandas as pd

    frame = pd.DataFrame(rows).drop(columns=["estimate is"])
    head = ("ncu's counters (measured, on the GPU) beside the faithful estimates (`harness/cudac/faithful.py`, made without a GPU); "
            "a missing measured value: ncu recorded no launch of that kernel or not that metric.")  # fmt: skip
    try:
        table = frame.to_markdown(index=False, floatfmt=".4g")
    except ImportError:  # tabulate is not on the GPU machine
        table = frame.to_csv(index=False)
    return f"{head}\n\n{table}\n"


def _frame(machine):
    from harness.cudac.kernel_table import kernel_table
    from harness.registry import implementations

    chosen = [impl for impl in implementations().values() if impl.kernel_figures is not None and "cuda" in impl.devices]
    return kernel_table(chosen, archs=[machine.arch])


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.gpuday.counters estimate --output FILE.json``: the faithful counter
    estimates of every GPU implementation's kernels at the counters' stage (NVRTC and
    nvdisasm, no GPU: the counters phase runs it beside ncu). ``python -m harness.gpuday.counters
    compare NCU_CSV --output counters.md``: the comparison made again, off the GPU, from the ncu
    CSV the phase kept (estimates computed here)."""
    import argparse
    import json
    from pathlib import Path

    from harness.cudac.faithful import MACHINES, counter_estimates
    parser = argparse.ArgumentParser(prog="python -m harness.gpuday.counters", description=main.__doc__)
    parser.add_argument("action", choices=["estimate", "compare"])
    parser.add_argument("ncu_csv", type=Path, nargs="?")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--case", default=COUNTERS_STAGE)
    parser.add_argument("--machine", default=COUNTERS_MACHINE, choices=[m.name for m in MACHINES])
    args = parser.parse_args(argv)
    machine = next(m for m in MACHINES if m.name == args.machine)
    if args.action == "compare" and args.ncu_csv is None:
        parser.error("compare needs the ncu CSV")
    frame, errors = _frame(machine)
    estimates = counter_estimates(frame, args.case, machine)
    if args.action == "estimate":
        args.output.write_text(json.dumps({"case": args.case, "machine": machine.name, "estimates": estimates, "errors": errors}, indent=1) + "\n")
    else:
        rows = compare(parse_ncu(args.ncu_csv.read_text(errors="replace")), estimates)
        args.output.write_text(f"# Counters at {args.case}: measured (ncu) / estimated\n\n" + markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
