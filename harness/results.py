"""The benchmark result: one typed row per timed computation on a case.

The benchmarks write it into pytest-benchmark's ``extra_info`` (``BenchmarkRow.to_extra_info``);
the report reads it back (``BenchmarkRow.from_extra_info``), which validates it and names the
key that is wrong. Only measured or counted facts are stored: throughput, density and roofline
figures are derived from them (``harness.perf.derived_metrics``) where they are shown, so they
cannot disagree with the counts.

Files written before the schema had a version (no ``schema`` key) are read too: their
``kind`` ("implementation" / "peer") and names give the roles they were reported with then.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, fields

from harness.cases import Case
from harness.registry import Role

SCHEMA = 2
#: What an older file's names meant: the PyTorch ways and the baseline the report used to hard-code.
_LEGACY_PYTORCH_WAYS = {"rep_merged", "rep_cross", "torch_roll"}
_LEGACY_BASELINE = "rep_merged"


class ResultFormatError(ValueError):
    """A stored row that cannot be read; the message names the key and what was expected."""


@dataclass(frozen=True)
class BenchmarkRow:
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

    @classmethod
    def for_case(cls, case: Case, **values) -> BenchmarkRow:
        """A row for ``case``: its parameters filled in from the case."""
        params = {f: getattr(case, f) for f in ("suite", "tier", "seed", "batch", "channels", "height", "width",
                                                 "big_kernel", "small_kernel", "groups", "sparsity", "tables")}  # fmt: skip
        return cls(case=case.name, nk=case.spec().nk, **params, **values)

    def with_determinism(self, deterministic: bool) -> BenchmarkRow:
        return dataclasses.replace(self, deterministic=deterministic)

    def to_extra_info(self) -> dict:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_extra_info(cls, info: dict) -> BenchmarkRow:
        """Read and validate a stored row (this schema or the unversioned one before it)."""
        if not isinstance(info, dict):
            raise ResultFormatError(f"extra_info must be a mapping, got {type(info).__name__}")
        schema = info.get("schema", 1)
        if schema == 1:
            info = _upgrade_legacy(info)
        elif schema != SCHEMA:
            raise ResultFormatError(f"extra_info schema {schema!r} is not known (this harness reads 1 and {SCHEMA})")
        values = {}
        for f in fields(cls):
            if f.name not in info:
                if f.default is not dataclasses.MISSING:
                    continue
                raise ResultFormatError(f"extra_info has no {f.name!r} key")
            values[f.name] = _typed(f.name, f.type, info[f.name])
        if values["role"] not in {role.value for role in Role}:
            raise ResultFormatError(f"extra_info role must be one of {[r.value for r in Role]}, got {values['role']!r}")
        return cls(**values)


def _typed(name: str, kind: str, value: object) -> object:
    optional = kind.endswith("| None")
    base = kind.removesuffix(" | None")
    if value is None and optional:
        return None
    checks = {
        "int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
    }
    if not checks[base](value):
        raise ResultFormatError(f"extra_info {name!r} must be {kind}, got {value!r}")
    return float(value) if base == "float" else value


def _upgrade_legacy(info: dict) -> dict:
    name, kind = info.get("computation"), info.get("kind")
    if kind not in ("implementation", "peer"):
        raise ResultFormatError(f"extra_info (no schema key) kind must be 'implementation' or 'peer', got {kind!r}")
    if name in _LEGACY_PYTORCH_WAYS:
        role = Role.PYTORCH_WAY
    else:
        role = Role.IMPLEMENTATION if kind == "implementation" else Role.OTHER_OPERATOR
    upgraded = {"role": role.value, "baseline": name == _LEGACY_BASELINE, "setup_seconds": None, "tier": "quick"}
    return {**upgraded, **info, "useful_flops": info.get("useful_flops", info.get("flops"))}
