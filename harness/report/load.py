"""Reading saved benchmark runs (pytest-benchmark JSON plus this project's ``sw`` keys) and
naming them: a run's probed peaks belong to the run, so two runs of one machine with different
peaks are two columns of the report, never one machine with two peaks."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.results import (BenchmarkRow, ComparisonRow, LayerComparisonRow, NetworkRow, ResultFormatError, Row, RunRecord,
                             TrainingRow, row_from_extra_info)  # fmt: skip

STATS = ("median", "iqr", "q1", "q3", "rounds")
#: Two runs' peaks (FLOP/s or bytes/s) closer than this ratio are the same machine state.
PEAKS_TOLERANCE = 1.10


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

    @property
    def host(self) -> str:
        return self.fingerprint.split(" / ")[0]

    def peaks(self, device: str) -> dict:
        """The roofline peaks for ``device`` in this run: CPU peaks, or the GPU's own (empty if not recorded)."""
        if device == "cpu":
            return self.machine.get("peaks") or {}
        return (self.machine.get("gpu") or {}).get("peaks") or {}

    @property
    def record(self) -> RunRecord:
        """The run's own record (validated when the file was loaded)."""
        return RunRecord.from_json(self.data["sw"])

    def all_rows(self) -> list[tuple[Row, dict]]:
        """Every benchmark's typed row with its timing statistics."""
        return [(row_from_extra_info(b["extra_info"]), b["stats"]) for b in self.data["benchmarks"]]

    def rows(self) -> list[tuple[BenchmarkRow, dict]]:
        """Each layer benchmark's row with its timing statistics."""
        return [(row, stats) for row, stats in self.all_rows() if isinstance(row, BenchmarkRow)]

    def network_rows(self) -> list[tuple[NetworkRow, dict]]:
        """Each network benchmark's row with its timing statistics (the Table 7 section)."""
        return [(row, stats) for row, stats in self.all_rows() if isinstance(row, NetworkRow)]

    def comparison_rows(self) -> list[ComparisonRow]:
        """Each Table 7 comparison's row (its networks' per-round times and paired ratios)."""
        return [row for row, _ in self.all_rows() if isinstance(row, ComparisonRow)]

    def layer_comparison_rows(self) -> list[LayerComparisonRow]:
        """Each layer case's interleaved comparison (its computations' per-round times and the
        implementations' paired speedups over the PyTorch ways)."""
        return [row for row, _ in self.all_rows() if isinstance(row, LayerComparisonRow)]

    def training_rows(self) -> list[tuple[TrainingRow, dict]]:
        """Each network training step's row with its timing statistics (Table 7's training column)."""
        return [(row, stats) for row, stats in self.all_rows() if isinstance(row, TrainingRow)]


def same_peaks(first: dict, second: dict, tolerance: float = PEAKS_TOLERANCE) -> bool:
    """Whether two runs' peaks agree within ``tolerance`` (both missing counts as agreeing)."""
    for key in ("gflops", "gbps"):
        a, b = first.get(key), second.get(key)
        if (a is None) != (b is None):
            return False
        if a is not None and not (a > 0 and b > 0 and math.exp(abs(math.log(a / b))) <= tolerance):
            return False
    return True


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
        try:
            RunRecord.from_json(data["sw"])
        except ResultFormatError as error:
            raise ReportInputError(f"{path}: {error}") from None
        benchmarks = _require(data, "benchmarks", path, "the file")
        for number, bench in enumerate(benchmarks if isinstance(benchmarks, list) else [None]):
            where = f"benchmark {bench.get('name', number) if isinstance(bench, dict) else number!r}"
            stats, extra = _require(bench, "stats", path, where), _require(bench, "extra_info", path, where)
            for key in STATS:
                if not isinstance(_require(stats, key, path, f"{where} stats"), (int, float)):
                    raise ReportInputError(f"{path}: {where} stats {key!r} is not a number: {stats[key]!r}")
            try:
                row_from_extra_info(extra)
            except ResultFormatError as error:
                raise ReportInputError(f"{path}: {where}: {error}") from None
        runs.append(Run(path, data))
    return runs


def run_labels(runs: Sequence[Run]) -> dict[Path, str]:
    """A column label per run: the host name; the whole fingerprint if two machines share a host
    name; and, where runs of one machine probed different peaks, the file's name beside it (those
    runs are not one machine state and are never merged)."""
    hosts = {}
    for run in runs:
        hosts.setdefault(run.host, set()).add(run.fingerprint)
    labels = {}
    for run in runs:
        base = run.host if len(hosts[run.host]) == 1 else run.fingerprint
        siblings = [other for other in runs if other.fingerprint == run.fingerprint]
        differ = any(
            not same_peaks(run.peaks(device), other.peaks(device)) for other in siblings for device in ("cpu", "cuda")
        )
        labels[run.path] = f"{base} [{run.path.stem}]" if differ else base
    return labels


@dataclass(frozen=True)
class Kernels:
    """The GPU kernels' figures, ``swbench kernels``' artifact (``--json``): a row per kernel,
    architecture and launch, and the implementations whose kernels did not build."""

    rows: list[dict]
    errors: dict[str, str]


def kernels_json(frame, errors: dict[str, str]) -> str:
    """The artifact's text from ``harness.cudac.kernel_table.kernel_table``'s answer."""
    rows = json.loads(frame.to_json(orient="records")) if len(frame) else []
    return json.dumps({"kernels": rows, "kernel_errors": dict(errors)}, indent=1, sort_keys=True) + "\n"


def load_kernels(path: Path | str | None) -> Kernels | None:
    """Read ``swbench kernels --json``'s file (None: none given)."""
    if path is None:
        return None
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportInputError(f"{path}: cannot read the kernels' JSON: {error}") from None
    rows, errors = _require(data, "kernels", path, "the file"), _require(data, "kernel_errors", path, "the file")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or not isinstance(errors, dict):
        raise ReportInputError(f"{path}: 'kernels' must be a list of mappings and 'kernel_errors' a mapping (swbench kernels --json)")
    return Kernels(rows, {str(k): str(v) for k, v in errors.items()})
