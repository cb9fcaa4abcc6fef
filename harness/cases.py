"""Cases: named, seeded operator instances (layer shapes), kept as data in ``cases/*.toml``.

A suite file holds an optional ``[defaults]`` table and a list of ``[[case]]`` tables; each
case's keys are ``Case``'s fields (``name`` required), a missing key taken from the defaults.

Each case has a benchmark tier: ``quick`` cases run on every benchmark run (minutes on a
2-core machine), ``full`` adds the rest (for real hardware), ``check`` cases are shapes for
correctness checks only and are never benchmarked.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.spec import ShiftwiseSpec

DEFAULT_CASES_DIR = Path(__file__).resolve().parent.parent / "cases"
TABLE_KINDS = ("official", "random")
#: Benchmark tiers, each including the ones before it; ``check`` cases are never benchmarked.
TIERS = ("quick", "full")
CASE_TIERS = (*TIERS, "check")


@dataclass(frozen=True)
class Case:
    """One operator instance and its input size. ``tables`` is ``official`` or ``random``;
    ``seed`` draws random tables, the pruning mask and the inputs."""

    name: str
    big_kernel: int
    small_kernel: int
    channels: int
    groups: int
    batch: int
    height: int
    width: int
    tables: str = "random"
    seed: int = 0
    sparsity: float = 0.0
    tier: str = "full"
    suite: str = ""

    def __post_init__(self) -> None:
        for field in ("batch", "height", "width"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"case {self.name!r}: {field} must be a positive int, got {value!r}")
        if self.tables not in TABLE_KINDS:
            raise ValueError(f"case {self.name!r}: tables must be one of {TABLE_KINDS}, got {self.tables!r}")
        if self.tier not in CASE_TIERS:
            raise ValueError(f"case {self.name!r}: tier must be one of {CASE_TIERS}, got {self.tier!r}")
        if not isinstance(self.sparsity, (int, float)) or not 0 <= self.sparsity <= 1:
            raise ValueError(f"case {self.name!r}: sparsity must be a number in [0, 1], got {self.sparsity!r}")
        try:
            self.spec()
        except ValueError as error:
            raise ValueError(f"case {self.name!r}: {error}") from None

    def spec(self) -> ShiftwiseSpec:
        """The case's operator instance, built once per case (cases are frozen and hashable)."""
        return _spec_of(self)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)


@functools.lru_cache(maxsize=1024)
def _spec_of(case: Case) -> ShiftwiseSpec:
    sizes = dict(big_kernel=case.big_kernel, small_kernel=case.small_kernel, channels=case.channels, groups=case.groups)
    if case.tables == "official":
        return ShiftwiseSpec.official(**sizes).pruned(case.sparsity, seed=case.seed)
    return ShiftwiseSpec.random(**sizes, seed=case.seed, sparsity=case.sparsity)


_CASE_FIELDS = {f.name for f in dataclasses.fields(Case)} - {"suite"}


def load_suite(path: str | os.PathLike) -> list[Case]:
    """The cases of one suite file; the suite is named after the file's stem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    unknown = set(data) - {"defaults", "case", "description", "model"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; expected [defaults] and [[case]]")
    if "model" in data:  # a model suite: [[model]] networks, read by harness.models.bench
        if "case" in data:
            raise ValueError(f"{path}: a suite holds [[case]] layers or [[model]] networks, not both")
        return []
    defaults = data.get("defaults", {})
    cases = []
    for index, entry in enumerate(data.get("case", [])):
        merged = {**defaults, **entry}
        unknown = set(merged) - _CASE_FIELDS
        if unknown:
            raise ValueError(f"{path}: case #{index}: unknown keys {sorted(unknown)}; known: {sorted(_CASE_FIELDS)}")
        missing = {f.name for f in dataclasses.fields(Case) if f.default is dataclasses.MISSING} - set(merged)
        if missing:
            raise ValueError(f"{path}: case #{index} ({merged.get('name', 'unnamed')}): missing keys {sorted(missing)}")
        cases.append(Case(**merged, suite=path.stem))
    names = [case.name for case in cases]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"{path}: case names must be unique, repeated: {duplicated}")
    return cases


def load_cases(folder: str | os.PathLike | None = None, suites: list[str] | None = None) -> list[Case]:
    """Cases of every suite in ``folder`` (default: the project's ``cases/``), or of ``suites``."""
    folder = Path(folder) if folder is not None else DEFAULT_CASES_DIR
    files = sorted(folder.glob("*.toml"))
    available = [file.stem for file in files]
    if suites is not None:
        unknown = sorted(set(suites) - set(available))
        if unknown:
            raise ValueError(f"unknown suites {unknown}; {folder} has {available}")
        files = [file for file in files if file.stem in suites]
    return [case for file in files for case in load_suite(file)]


def in_tier(case: Case, tier: str) -> bool:
    """Whether a benchmark run of ``tier`` includes ``case`` (``full`` includes ``quick``)."""
    if tier not in TIERS:
        raise ValueError(f"benchmark tier must be one of {TIERS}, got {tier!r}")
    return case.tier in TIERS and TIERS.index(case.tier) <= TIERS.index(tier)


def suite_descriptions(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """Each suite's ``description`` (the TOML's top-level key), by suite name; the report shows it."""
    folder = Path(folder) if folder is not None else DEFAULT_CASES_DIR
    found = {}
    for file in sorted(folder.glob("*.toml")):
        try:
            text = tomllib.loads(file.read_text()).get("description")
        except tomllib.TOMLDecodeError:
            continue  # load_suite names the error when the suite is used
        if isinstance(text, str):
            found[file.stem] = text
    return found
