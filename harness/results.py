"""The benchmark results: one typed row per timed item, and one typed record per run.

A row's ``kind`` says what was timed: ``BenchmarkRow`` ("layer": one computation on a layer
case), ``NetworkRow`` ("network": a whole network on a batch), ``TrainingRow`` ("training": a
training step), ``ComparisonRow`` ("comparison": the networks of one Table 7 comparison timed
interleaved, round by round, with their paired ratios). The benchmarks write a row into pytest-benchmark's ``extra_info``
(``to_extra_info``); the report reads every row back through ``row_from_extra_info``, which
validates it and names the key that is wrong. ``RunRecord`` is the run's own record (the JSON's
``sw`` key): tier, suites, command, failures, what was not run and why, the machine's probes.
Only measured or counted facts are stored: throughput, density and roofline figures are derived
from them where they are shown, so they cannot disagree with the counts.

Older files are read too: schema 2 layer rows (no ``kind``) and network rows written as untyped
``kind="model"`` dicts (their derived ``images_per_s`` and ``gflop_per_image`` are dropped).
Unversioned (schema 1) layer rows carry no role; they are refused with a one-line error
(``reports/notes/upgrade_schema1.py`` adds the roles those files were reported with).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field, fields

import numpy as np

from harness.cases import Case
from harness.registry import Role

SCHEMA = 3
#: What a row's ``kind`` may be, and what a run's not-run entries and failures belong to.
KINDS = ("layer", "network", "training", "comparison", "layer_comparison")


class ResultFormatError(ValueError):
    """A stored row or run record that cannot be read; the message names the key and what was expected."""


class _Row:
    """What every row type shares: written with its kind and the schema, read back validated."""

    kind: str

    def with_determinism(self, deterministic: bool):
        return dataclasses.replace(self, deterministic=deterministic)

    def to_extra_info(self) -> dict:
        return {"schema": SCHEMA, "kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def _read(cls, info: dict, where: str = "extra_info"):
        values = {}
        for f in fields(cls):
            if f.name not in info:
                if f.default is not dataclasses.MISSING:
                    continue
                raise ResultFormatError(f"{where} has no {f.name!r} key")
            values[f.name] = _typed(f"{where} {f.name!r}", f.type, info[f.name])
        return cls(**values)

    @classmethod
    def from_extra_info(cls, info: dict):
        """Read and validate a stored row of this type."""
        row = row_from_extra_info(info)
        if not isinstance(row, cls):
            raise ResultFormatError(f"extra_info is a {row.kind} row, not a {cls.kind} row")
        return row


@dataclass(frozen=True)
class BenchmarkRow(_Row):
    """A layer benchmark: one computation (an implementation or a peer) on one layer case."""

    kind = "layer"
    # What was timed, and where.
    computation: str
    role: str  # a harness.Role value
    baseline: bool  # the results tables' speed baseline (one computation declares it)
    description: str
    device: str
    execution: str
    threads: int | None  # torch's CPU threads; None on a GPU
    dtype: str
    # The case.
    suite: str
    case: str
    tier: str
    seed: int
    batch: int
    channels: int
    height: int
    width: int
    big_kernel: int
    small_kernel: int
    groups: int
    nk: int
    sparsity: float
    tables: str
    # Work by count.
    useful_flops: int  # the SW operator's useful work on the case (the same for every computation)
    flops: int  # what this computation executes (useful FLOPs for implementations)
    compulsory_bytes: int
    traffic_bytes: int | None  # by the computation's own traffic model; None: not declared
    # Facts of the run.
    setup_seconds: float | None  # compilation / preparation, never timed (torch.compile peers)
    verified: str
    deterministic: bool | None = None
    #: what was timed: "forward", or "forward+backward" (the gradients of x and of the small kernels)
    passes: str = "forward"
    #: of a forward+backward: whose backward ran (an implementation's own, "reference", "autograd")
    backward: str | None = None
    #: "operator": the SW operator's three branches (or their sum); "deployed": a deployed layer's
    #: one output h + v + i + x (``harness.bench.FORMS``). The summary compares within a form.
    form: str = "operator"

    @classmethod
    def for_case(cls, case: Case, **values) -> BenchmarkRow:
        """A row for ``case``: its parameters filled in from the case."""
        params = {f: getattr(case, f) for f in ("suite", "tier", "seed", "batch", "channels", "height", "width",
                                                 "big_kernel", "small_kernel", "groups", "sparsity", "tables")}  # fmt: skip
        return cls(case=case.name, nk=case.spec().nk, **params, **values)


@dataclass(frozen=True)
class NetworkRow(_Row):
    """A network benchmark: a whole network's forward pass on a batch (the Table 7 section)."""

    kind = "network"
    computation: str  # network[implementation] for SW networks, else the network
    network: str
    implementation: str | None  # the SW implementation plugged in; None for a network without SW layers
    label: str  # the network's name in the paper's tables
    device: str
    case: str
    suite: str
    batch: int
    height: int
    width: int
    small_kernel: int | None
    flops: int  # of one forward pass on the batch (FlopCounterMode)
    compulsory_bytes: int
    params: int
    sw_time_share: float  # fraction of a forward pass in the SW (or large-kernel) layers, measured
    threads: int | None
    dtype: str
    memory_format: str
    verified: str
    deterministic: bool | None = None


@dataclass(frozen=True)
class TrainingRow(_Row):
    """A training benchmark: forward, backward and an optimizer step of a network on a batch."""

    kind = "training"
    computation: str
    network: str
    implementation: str | None
    #: whose backward ran through the SW layers: the implementation's own, or "reference"
    backward: str
    device: str
    case: str
    suite: str
    batch: int
    height: int
    width: int
    params: int
    threads: int | None
    dtype: str
    memory_format: str
    verified: str
    deterministic: bool | None = None


@dataclass(frozen=True)
class PairedRatioEntry:
    """The speed (images/s) of ``numerator`` over ``denominator``'s (> 1: the numerator is faster),
    from paired rounds (``harness.paired.paired_ratio`` of their times), with its interval."""

    numerator: str  # a compared network's or layer computation's name
    denominator: str
    ratio: float
    low: float
    high: float
    rounds: int
    confidence: float


@dataclass(frozen=True)
class ComparisonRow(_Row):
    """The networks of one Table 7 comparison (an SW network with its implementation, its merged
    form, UniRepLKNet and SLaK of its size) timed interleaved: each timed round runs every
    compared network once, in a fresh random order, so all see the same load. The ratios are
    stored with their intervals; the point ratio is checked against the times when read."""

    kind = "comparison"
    computation: str
    case: str  # the SW network's case
    suite: str
    device: str
    batch: int
    height: int
    width: int
    dtype: str
    threads: int | None
    implementation: str  # the SW network's implementation
    seed: int  # of the rounds' orders
    #: computation -> network name, of every network of the comparison (compared or not)
    networks: dict[str, str]
    #: computation -> what its verification checked, of each compared network
    verified: dict[str, str]
    #: computation -> the error of a network whose preparation or verification failed (the others are compared)
    failed: dict[str, str]
    #: computation -> why a network of the comparison is not run here (its network item's reason)
    not_run: dict[str, str]
    #: computation -> seconds of each timed round's forward pass (round i of every network: one round)
    times: dict[str, list[float]]
    ratios: list[PairedRatioEntry]
    deterministic: bool | None = None

    def problems(self) -> list[str]:
        """What makes this row inconsistent (its times and ratios), empty if nothing."""
        return paired_problems(self.times, self.ratios, self.networks, "networks")


@dataclass(frozen=True)
class LayerComparisonRow(_Row):
    """The SW implementations and the PyTorch ways of one layer case timed interleaved: each
    timed round calls every compared computation once, in a fresh random order, so all see the
    same load. ``ratios``: each implementation's speed over each PyTorch way's (t_way / t_impl
    per round); ``fastest_way``: the PyTorch way with the least geometric-mean time over the
    rounds. Checked when read: the ratios against the times, the fastest way against them."""

    kind = "layer_comparison"
    computation: str
    case: str
    suite: str
    device: str
    dtype: str
    threads: int | None
    batch: int
    seed: int  # of the rounds' orders
    #: computation -> its role (a harness.Role value), of every computation compared or meant to be
    roles: dict[str, str]
    verified: dict[str, str]
    failed: dict[str, str]
    not_run: dict[str, str]
    #: computation -> seconds of its call in each timed round
    times: dict[str, list[float]]
    ratios: list[PairedRatioEntry]
    fastest_way: str | None
    deterministic: bool | None = None
    form: str = "operator"  # what its computations compute, as ``BenchmarkRow.form``

    def problems(self) -> list[str]:
        found = paired_problems(self.times, self.ratios, self.roles, "computations")
        ways = {name: float(np.mean(np.log(t))) for name, t in self.times.items()
                if self.roles.get(name) == Role.PYTORCH_WAY.value and t}  # fmt: skip
        if ways and self.fastest_way != min(ways, key=ways.get):
            found.append(f"fastest_way {self.fastest_way!r} is not the PyTorch way of least time ({min(ways, key=ways.get)!r})")
        for entry in self.ratios:
            if self.roles.get(entry.denominator) != Role.PYTORCH_WAY.value:
                found.append(f"ratio {entry.numerator} / {entry.denominator}: the denominator is not a PyTorch way")
        return found

    def ratio(self, implementation: str, way: str | None = None) -> PairedRatioEntry | None:
        """``implementation``'s paired speed over ``way`` (default: the fastest way), if compared."""
        way = way or self.fastest_way
        return next((e for e in self.ratios if (e.numerator, e.denominator) == (implementation, way)), None)


def paired_problems(times: dict[str, list[float]], ratios: list[PairedRatioEntry], members: dict, what: str) -> list[str]:
    """What makes paired rounds and their ratios inconsistent: unequal round counts, times of a
    non-member, a ratio (t_denominator / t_numerator per round, geometric mean) that does not
    follow from the times or lies outside its own interval."""
    found = []
    lengths = {len(t) for t in times.values()}
    if len(lengths) > 1:
        found.append(f"its {what}' times have different numbers of rounds: {sorted(lengths)}")
    for name in times:
        if name not in members:
            found.append(f"times of {name!r}, which is not one of its {what}")
    for entry in ratios:
        a, b = times.get(entry.numerator), times.get(entry.denominator)
        if a is None or b is None:
            found.append(f"ratio {entry.numerator} / {entry.denominator}: no times of both")
            continue
        # speed of the numerator over the denominator's = t_denominator / t_numerator per round
        expected = float(np.exp(np.mean(np.log(np.asarray(b) / np.asarray(a))))) if len(a) == len(b) and a else float("nan")
        if not (entry.rounds == len(a) and np.isclose(entry.ratio, expected, rtol=1e-9)
                and entry.low <= entry.ratio <= entry.high):  # fmt: skip
            found.append(f"ratio {entry.numerator} / {entry.denominator} = {entry.ratio!r} over {entry.rounds} rounds "
                         f"[{entry.low!r}, {entry.high!r}] does not follow from its times ({expected!r}, {len(a)} rounds)")  # fmt: skip
    return found


ROW_TYPES: dict[str, type[_Row]] = {
    row.kind: row for row in (BenchmarkRow, NetworkRow, TrainingRow, ComparisonRow, LayerComparisonRow)
}
Row = BenchmarkRow | NetworkRow | TrainingRow | ComparisonRow | LayerComparisonRow


def row_from_extra_info(info: object) -> Row:
    """Read and validate any stored row: its ``kind`` picks the type."""
    if not isinstance(info, dict):
        raise ResultFormatError(f"extra_info must be a mapping, got {type(info).__name__}")
    schema = info.get("schema", 1)
    if info.get("kind") == "model" and "schema" not in info:  # networks before they had a row type
        info = {k: v for k, v in info.items() if k not in ("kind", "images_per_s", "gflop_per_image")} | {"kind": "network"}
    elif schema == 1:
        raise ResultFormatError(
            "extra_info has no 'schema' key (a file from before rows declared their role): "
            "upgrade it with reports/notes/upgrade_schema1.py"
        )
    elif schema == 2:
        info = {"kind": "layer", **info}
    elif schema != SCHEMA:
        raise ResultFormatError(f"extra_info schema {schema!r} is not known (this harness reads 2 and {SCHEMA})")
    kind = info.get("kind")
    if kind not in ROW_TYPES:
        raise ResultFormatError(f"extra_info kind must be one of {list(ROW_TYPES)}, got {kind!r}")
    row = ROW_TYPES[kind]._read(info)
    if isinstance(row, BenchmarkRow) and row.role not in {role.value for role in Role}:
        raise ResultFormatError(f"extra_info role must be one of {[r.value for r in Role]}, got {row.role!r}")
    if isinstance(row, (ComparisonRow, LayerComparisonRow)) and (problems := row.problems()):
        raise ResultFormatError(f"extra_info comparison {row.computation!r}: " + "; ".join(problems))
    return row


# ----------------------------------------------------------------------------- the run's record
@dataclass(frozen=True)
class NotRun:
    """An item that was collected and selected but not run here, and why."""

    computation: str
    device: str
    reason: str
    kind: str = "layer"
    case: str | None = None


@dataclass(frozen=True)
class Failure:
    """An item that ran and failed (a wrong result, a crash, a hang past its time limit):
    recorded, the run went on. ``reproducer``: the command that reruns the item alone."""

    computation: str
    device: str
    case: str
    error: str
    kind: str = "layer"
    reproducer: str = ""


@dataclass
class RunRecord:
    """The JSON's ``sw`` key: what the run was asked, what ran, what did not and why.

    ``suites`` are those of the items that ran (a ``-k`` selection changes them);
    ``probes`` holds the machine's peaks probed before the first benchmark (``"start"``) and
    after the last (``"end"``), per device: a difference is drift, flagged by the report."""

    tier: str
    command: str
    dtype: str = "float32"
    suites: list[str] = field(default_factory=list)
    suite_descriptions: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    not_run: list[NotRun] = field(default_factory=list)
    load_errors: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    probes: dict[str, dict[str, dict]] = field(default_factory=dict)
    #: GPU kernel figures: only in files written before they became ``swbench kernels``' own artifact
    kernels: list[dict] = field(default_factory=list)
    kernel_errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> RunRecord:
        """Read and validate a stored ``sw`` record (the keys older files lack take their defaults)."""
        if not isinstance(data, dict):
            raise ResultFormatError(f"sw must be a mapping, got {type(data).__name__}")
        for key in ("tier", "command", "failures", "not_run"):
            if key not in data:
                raise ResultFormatError(f"sw has no {key!r} key")
        values = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in ("failures", "not_run"):
                entry = Failure if f.name == "failures" else NotRun
                if not isinstance(value, list):
                    raise ResultFormatError(f"sw {f.name!r} must be a list, got {value!r}")
                value = [_read_entry(entry, item, f"sw {f.name}[{n}]") for n, item in enumerate(value)]
            elif f.name in ("tier", "command", "dtype"):
                value = _typed(f"sw {f.name!r}", "str", value)
            elif f.name == "interrupted":
                value = _typed("sw 'interrupted'", "bool", value)
            elif f.name in ("suites", "kernels"):
                if not isinstance(value, list):
                    raise ResultFormatError(f"sw {f.name!r} must be a list, got {value!r}")
            elif not isinstance(value, dict):
                raise ResultFormatError(f"sw {f.name!r} must be a mapping, got {value!r}")
            values[f.name] = value
        return cls(**values)


def _read_entry(entry: type, item: object, where: str):
    if not isinstance(item, dict):
        raise ResultFormatError(f"{where} must be a mapping, got {item!r}")
    values = {}
    for f in fields(entry):
        if f.name not in item:
            if f.default is dataclasses.MISSING:
                raise ResultFormatError(f"{where} has no {f.name!r} key")
            continue
        values[f.name] = _typed(f"{where} {f.name!r}", f.type, item[f.name])
    return entry(**values)


#: Records stored inside a row, by the name their fields' annotations use.
_ENTRIES = {"PairedRatioEntry": PairedRatioEntry}


def _typed(where: str, kind: str, value: object) -> object:
    optional = kind.endswith("| None")
    base = kind.removesuffix(" | None")
    if value is None and optional:
        return None
    if base.startswith("dict[str, ") and base.endswith("]"):
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise ResultFormatError(f"{where} must be a mapping with string keys, got {value!r}")
        return {key: _typed(f"{where}[{key!r}]", base[len("dict[str, ") : -1], item) for key, item in value.items()}
    if base.startswith("list[") and base.endswith("]"):
        if not isinstance(value, list):
            raise ResultFormatError(f"{where} must be a list, got {value!r}")
        return [_typed(f"{where}[{number}]", base[len("list[") : -1], item) for number, item in enumerate(value)]
    if base in _ENTRIES:
        return _read_entry(_ENTRIES[base], value, where)
    checks = {
        "int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
    }
    if not checks[base](value):
        raise ResultFormatError(f"{where} must be {kind}, got {value!r}")
    return float(value) if base == "float" else value
