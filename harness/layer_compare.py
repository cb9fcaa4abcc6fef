"""A layer case's SW implementations against its PyTorch ways, timed interleaved, so that the
speedups hold on a noisy, shared machine.

The layer items (``harness.bench.layer_items``) time each computation's rounds back to back:
load that drifts between two items moves their ratio, and the summary's "speedup" is a ratio
of independent medians. A comparison item takes every computation a case's layer items time
on a device (the SW implementations and the PyTorch ways; lower precision and other operators
are context, not compared), each prepared and verified exactly as its own layer item is
(``Computation.prepare``); one whose preparation or verification fails is recorded against
itself and left out. Computations of one form are compared (``harness.bench.FORMS``): an
implementation's deployed layer (``<name>+deployed``, one output h + v + i + x) against the
deployed PyTorch forms, its operator against the other PyTorch ways. One timed round (``harness.paired.Rounds``) calls every compared
computation once, in a fresh random order seeded by the case; pytest-benchmark times
``compare_rounds`` rounds (the case's field: ``cases/*.toml`` says why). The row
(``harness.results.LayerComparisonRow``) keeps every computation's per-round times, the
fastest PyTorch way (least geometric-mean time over the rounds) and each implementation's
paired speed over every PyTorch way (``harness.paired.paired_ratio``: the geometric mean of
per-round ratios, a bootstrap interval). After the rounds the timed calls of each computation
from ``impls/`` (untrusted code) are checked as its own item's are
(``integrity.check_timed_calls``): one that fails there is recorded, its times and ratios
dropped; the others stand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from harness.bench import FORMS, Computation, Prepared, Selection, computations, layer_cases
from harness.cases import Case
from harness.checking import integrity
from harness.paired import Rounds, paired_ratio
from harness.registry import Role
from harness.results import LayerComparisonRow, PairedRatioEntry

#: The roles a comparison times: what is judged and what it is judged against.
COMPARED = (Role.IMPLEMENTATION, Role.PYTORCH_WAY)


class NothingToCompare(RuntimeError):
    """A comparison left without an implementation or without a PyTorch way after failures."""


@dataclass(frozen=True)
class LayerComparisonItem:
    """One layer case's comparison on a device as a benchmark item (``harness.bench.Item``)."""

    case: Case
    device: str
    members: tuple[Computation, ...]  # implementations first, then the PyTorch ways, by name; all of one form
    skip: str | None = None
    form: str = "operator"  # harness.bench.FORMS: what the members compute
    kind = "layer_comparison"

    @property
    def computation(self) -> str:
        return "interleaved" if self.form == "operator" else f"interleaved_{self.form}"

    @property
    def case_name(self) -> str:
        return self.case.name

    @property
    def suite(self) -> str:
        return self.case.suite

    @property
    def group(self) -> str:
        return f"{self.suite}/{self.case_name}/{self.computation}"

    @property
    def id(self) -> str:  # no implementation's name in it: a -k that picks one implementation leaves it out
        return f"{self.computation.replace('_', '-')}-{self.device}-{self.suite}-{self.case_name}"

    @property
    def rounds(self) -> int:
        return self.case.compare_rounds

    def prepare(self, session) -> Prepared:
        """Each computation prepared and verified as its layer item is, a failure recorded and
        left out; the timed call is one interleaved round of the others."""
        if self.skip:
            raise RuntimeError(f"{self.id} is not run here: {self.skip}")
        prepared, verified, failed = {}, {}, {}
        for member in self.members:
            try:
                ready = member.prepare(self.case, session.dtype, self.device, session.references)  # one float64 reference for all
                first = ready.run()  # its warm-up and verified first call, as Session.measure makes them
                verified[member.name] = ready.verify(first)
            except Exception as error:  # that computation is left out, the others are compared
                failed[member.name] = f"{type(error).__name__}: {error} (its own item: {member.name}-{self.device}-{self.suite}-{self.case_name})"
                session.part_failed(self, member.name, self.case_name, error)
                continue
            prepared[member.name] = ready
        roles = {m.name: m.role.value for m in self.members}
        if not any(roles[n] == Role.IMPLEMENTATION.value for n in prepared) or not any(roles[n] == Role.PYTORCH_WAY.value for n in prepared):
            raise NothingToCompare(f"{self.id}: {sorted(prepared) or 'nothing'} left to compare "
                                   f"({'; '.join(f'{n}: {e}' for n, e in failed.items()) or 'no failures'})")  # fmt: skip
        rounds = Rounds({name: ready.run for name, ready in prepared.items()}, seed=self.case.seed)
        names = tuple(prepared)
        from_impls = {m.name for m in self.members if m.implementation is not None}  # untrusted code: checked after timing
        firsts: dict[str, object] = {}  # each computation's result in the first round (the untimed warm-up)
        latest: dict[str, object] = {}  # and in the last round

        def run() -> tuple[object, ...]:
            results = rounds.run()
            for name in names:
                firsts.setdefault(name, results[name])
            latest.update(results)
            return tuple(results.values())

        dropped: dict[str, str] = {}  # computations whose rounds cannot be trusted: left out of the row

        def drop(name: str, error: Exception) -> None:
            if name not in dropped:
                dropped[name] = f"{type(error).__name__}: {error}"
                session.part_failed(self, name, self.case_name, error)

        def verify(outputs: object) -> str:
            """Each computation's result of the round, by its own layer item's check; one that
            fails it is recorded and left out of the row (not the others)."""
            for name, output in zip(names, outputs, strict=True):
                try:
                    prepared[name].verify(output)
                except AssertionError as error:
                    drop(name, error)
            return f"{len(names)} computations, each by its own layer item's verification"

        def row(_: str) -> LayerComparisonRow:
            return LayerComparisonRow(
                computation=self.computation, case=self.case_name, suite=self.suite, device=self.device,
                dtype=str(session.dtype).removeprefix("torch."), threads=torch.get_num_threads() if self.device == "cpu" else None,
                batch=self.case.batch, seed=self.case.seed, roles=roles, verified=verified, failed=failed, not_run={},
                times={}, ratios=[], fastest_way=None, form=self.form,
            )  # fmt: skip

        def finish(done: LayerComparisonRow) -> LayerComparisonRow:
            """The timed rounds' times (the last ``rounds``: the warm-up round before them is left
            out), the timed calls of the computations from ``impls/`` checked, the ratios."""
            times = rounds.times(last=self.rounds)
            for name in names:
                if name in from_impls and name not in dropped:
                    ready = prepared[name]
                    try:
                        integrity.check_timed_calls(ready.run, ready.verify, firsts[name], latest[name], ready.inputs, ready.source)
                    except Exception as error:  # its rounds cannot be trusted: recorded, its ratios dropped
                        drop(name, error)
            cheated = {**done.failed, **dropped}
            kept = {n: t for n, t in times.items() if n not in cheated}
            if not any(roles[n] == Role.IMPLEMENTATION.value for n in kept) or not any(roles[n] == Role.PYTORCH_WAY.value for n in kept):
                raise NothingToCompare(f"{self.id}: {sorted(kept) or 'nothing'} left after the rounds ({'; '.join(f'{n}: {e}' for n, e in dropped.items())})")
            ways = {n: float(np.mean(np.log(t))) for n, t in kept.items() if roles[n] == Role.PYTORCH_WAY.value}
            impls = [n for n in kept if roles[n] == Role.IMPLEMENTATION.value]
            ratios = [PairedRatioEntry(impl, way, **dataclasses.asdict(paired_ratio(kept[impl], kept[way])))
                      for impl in impls for way in ways]  # fmt: skip
            return dataclasses.replace(done, failed=cheated, times={n: t.tolist() for n, t in kept.items()}, ratios=ratios,
                                       fastest_way=min(ways, key=ways.get) if ways else None)  # fmt: skip

        return Prepared(run, verify, row, rounds=self.rounds, finish=finish)


def layer_comparison_items(selection: Selection) -> list[LayerComparisonItem]:
    """A comparison per selected layer case with ``compare_rounds``, per device and per form
    (``harness.bench.FORMS``: the operator's implementations against the PyTorch ways that compute
    the operator, the implementations' deployed layers against the deployed PyTorch forms), of
    the computations its layer items time there (``COMPARED`` roles); a form with no
    implementation or no PyTorch way timed on a device gives none there (the layer items say why)."""
    members = [c for c in computations() if c.role in COMPARED]
    items = []
    for device in selection.devices:
        for form in FORMS:
            here = [c for c in members if c.form == form and device in c.devices
                    and c.not_benchmarked_reason(device, selection.tier, selection.dtype) is None]  # fmt: skip
            here.sort(key=lambda c: (c.role is not Role.IMPLEMENTATION, c.name))
            if not any(c.role is Role.IMPLEMENTATION for c in here) or not any(c.role is Role.PYTORCH_WAY for c in here):
                continue
            items += [LayerComparisonItem(case, device, tuple(here), form=form)
                      for case in layer_cases(selection) if case.compare_rounds]  # fmt: skip
    return items


__all__ = ["COMPARED", "LayerComparisonItem", "NothingToCompare", "layer_comparison_items"]
