"""Cases: named, seeded operator instances (layer shapes) and networks, kept as data in
``cases/*.toml``; the suites they belong to; the tiers.

A suite file holds a ``description``, what the suite is for (``checks``: which ``swbench
check`` tiers check its cases, ``CHECKS``; ``figures_batch``: the suite whose cases at that
batch are the stages the GPU figures are given for), an optional ``[defaults]`` table and either
``[[case]]`` tables (layers: ``Case``'s fields) or ``[[model]]`` tables (networks:
``ModelCase``'s fields), a missing key taken from the defaults; ``measures`` says whether its
cases time inference (the default) or training. ``load_suites`` reads every kind.

Tiers (``Tier``): ``quick`` (minutes on a 2-core machine) and ``full`` (adds the rest, for real
hardware); a run of a tier includes what is in it or in a tier before it (``Tier.includes``).
A case of tier ``check`` is a shape for correctness checks only, never benchmarked.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.spec import ShiftwiseSpec

DEFAULT_CASES_DIR = Path(__file__).resolve().parent.parent / "cases"
TABLE_KINDS = ("official", "random")


class Tier(enum.Enum):
    """A run's tier (benchmarks and ``swbench check``), each including the ones before it."""

    QUICK = "quick"
    FULL = "full"

    @classmethod
    def parse(cls, name: str | Tier) -> Tier:
        if isinstance(name, Tier):
            return name
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"tier must be one of {TIERS}, got {name!r}") from None

    def includes(self, first: str | Tier) -> bool:
        """Whether a run of this tier includes what is in tier ``first`` on (``check``: never)."""
        if first == "check":
            return False
        order = list(Tier)
        return order.index(Tier.parse(first)) <= order.index(self)


TIERS = tuple(tier.value for tier in Tier)
#: A case's or network's tier: a run tier, or ``check`` (shapes for correctness checks only).
CASE_TIERS = (*TIERS, "check")
#: What a suite's ``checks`` may say: ``all`` (every check tier checks every case), ``layers``
#: (real network layers: the quick tier checks one case per layer at batch 1, the full tier all),
#: ``full`` (only the full tier), ``none`` (networks: not operator checks).
CHECKS = ("all", "layers", "full", "none")


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
    #: rounds of the interleaved comparison of the case's SW implementations with the PyTorch
    #: ways (``harness.layer_compare``); 0: the case has none
    compare_rounds: int = 0

    def __post_init__(self) -> None:
        rounds = self.compare_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0 or rounds == 1:
            raise ValueError(f"case {self.name!r}: compare_rounds must be 0 (no comparison) or an int >= 2 "
                             f"(a ratio needs paired rounds), got {self.compare_rounds!r}")  # fmt: skip
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


@dataclass(frozen=True)
class ModelCase:
    """One ``[[model]]`` entry: a network at a batch size and input size (the network's name is
    checked by ``harness.models.bench``, which knows the networks)."""

    name: str
    network: str
    batch: int
    height: int = 224
    width: int = 224
    small_kernel: int | None = None
    tier: str = "quick"
    rounds: int = 3
    #: rounds of the interleaved comparison this (SW) network leads (``harness.models.compare``)
    compare_rounds: int = 20
    seed: int = 0
    suite: str = "models"

    def __post_init__(self) -> None:
        for field in ("batch", "height", "width", "rounds", "compare_rounds"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"model case {self.name!r}: {field} must be a positive int, got {value!r}")
        if self.compare_rounds < 2:
            raise ValueError(f"model case {self.name!r}: compare_rounds must be >= 2 (a ratio needs paired rounds), got {self.compare_rounds}")
        if self.tier not in CASE_TIERS:
            raise ValueError(f"model case {self.name!r}: tier must be one of {CASE_TIERS}, got {self.tier!r}")


_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelCase)} - {"suite"}


@dataclass(frozen=True)
class Suite:
    """One suite file: what it is for and its layer cases or networks."""

    name: str
    description: str | None
    checks: str
    figures_batch: int | None
    cases: tuple[Case, ...] = ()
    models: tuple[ModelCase, ...] = ()
    #: what the suite times: ``inference`` (a forward pass) or ``training`` (forward + backward
    #: of a layer; a network's training step)
    measures: str = "inference"


#: What a suite of networks may measure (its TOML's ``measures``).
MEASURES = ("inference", "training")


def _entries(path: Path, data: dict, table: str, kind: type, known: set[str]) -> list:
    defaults = data.get("defaults", {})
    entries = []
    for index, entry in enumerate(data.get(table, [])):
        merged = {**defaults, **entry}
        unknown = set(merged) - known
        if unknown:
            raise ValueError(f"{path}: {table} #{index}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        missing = {f.name for f in dataclasses.fields(kind) if f.default is dataclasses.MISSING} - set(merged)
        if missing:
            raise ValueError(f"{path}: {table} #{index} ({merged.get('name', 'unnamed')}): missing keys {sorted(missing)}")
        entries.append(kind(**merged, suite=path.stem))
    names = [entry.name for entry in entries]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"{path}: {table} names must be unique, repeated: {duplicated}")
    return entries


def read_suite(path: str | os.PathLike) -> Suite:
    """One suite file, of either kind; the suite is named after the file's stem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    unknown = set(data) - {"defaults", "case", "model", "description", "checks", "figures_batch", "measures"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; expected description, checks, "
                         "figures_batch, [defaults] and [[case]] or [[model]]")  # fmt: skip
    if "model" in data and "case" in data:
        raise ValueError(f"{path}: a suite holds [[case]] layers or [[model]] networks, not both")
    checks = data.get("checks", "none" if "model" in data else "all")
    if checks not in CHECKS:
        raise ValueError(f"{path}: checks must be one of {CHECKS}, got {checks!r}")
    batch = data.get("figures_batch")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0):
        raise ValueError(f"{path}: figures_batch must be a positive int, got {batch!r}")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"{path}: description must be a string, got {description!r}")
    measures = data.get("measures", "inference")
    if measures not in MEASURES:
        raise ValueError(f"{path}: measures must be one of {MEASURES}, got {measures!r}")
    if "model" in data:
        models = tuple(_entries(path, data, "model", ModelCase, _MODEL_FIELDS))
        return Suite(path.stem, description, checks, batch, models=models, measures=measures)
    cases = tuple(_entries(path, data, "case", Case, _CASE_FIELDS))
    return Suite(path.stem, description, checks, batch, cases=cases, measures=measures)


def load_suites(folder: str | os.PathLike | None = None, suites: list[str] | None = None) -> list[Suite]:
    """Every suite in ``folder`` (default: the project's ``cases/``), or those named ``suites``."""
    folder = Path(folder) if folder is not None else DEFAULT_CASES_DIR
    files = sorted(folder.glob("*.toml"))
    available = [file.stem for file in files]
    if suites is not None:
        unknown = sorted(set(suites) - set(available))
        if unknown:
            raise ValueError(f"unknown suites {unknown}; {folder} has {available}")
        files = [file for file in files if file.stem in suites]
    return [read_suite(file) for file in files]


def load_suite(path: str | os.PathLike) -> list[Case]:
    """The layer cases of one suite file (none for a suite of networks)."""
    return list(read_suite(path).cases)


def load_cases(folder: str | os.PathLike | None = None, suites: list[str] | None = None,
               measures: str | None = None) -> list[Case]:  # fmt: skip
    """Layer cases of every suite in ``folder`` (default: the project's ``cases/``), or of
    ``suites``; only those of suites that measure ``measures`` (inference: the forward;
    training: forward + backward) when it is given."""
    return [case for suite in load_suites(folder, suites) if measures in (None, suite.measures) for case in suite.cases]


def load_model_cases(folder: str | os.PathLike | None = None, suites: list[str] | None = None,
                     measures: str | None = "inference") -> list[ModelCase]:  # fmt: skip
    """Networks of every suite in ``folder`` (default ``cases/``), or of ``suites``, that
    measure ``measures`` (inference or training; None: both)."""
    return [case for suite in load_suites(folder, suites) if measures in (None, suite.measures) for case in suite.models]


def figures_stages(folder: str | os.PathLike | None = None) -> tuple[Suite, list[Case]]:
    """The suite that declares ``figures_batch`` and its cases at that batch, sparsity 0: the
    stages every GPU figure is given for."""
    declaring = [suite for suite in load_suites(folder) if suite.figures_batch is not None]
    if len(declaring) != 1:
        raise ValueError(f"exactly one suite must declare figures_batch, found {[s.name for s in declaring]}")
    (suite,) = declaring
    return suite, [c for c in suite.cases if c.batch == suite.figures_batch and c.sparsity == 0]


def suite_descriptions(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """Each suite's ``description``, by suite name; the report shows it."""
    return {suite.name: suite.description for suite in load_suites(folder) if suite.description is not None}
