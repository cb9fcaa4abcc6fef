"""Table 7's comparisons timed interleaved, so that they hold on a noisy, shared machine.

The network items (``harness.models.bench``) time each network's rounds back to back, so load
that drifts between two networks' items moves their ratio (up to 2x between runs on a shared
2-core box). A comparison item takes the networks of one comparison of ``table7.RATIOS``: an SW
network with the implementation ``impl="auto"`` resolves to on the device and dtype (the
highest declared rank of those that run natively: what a user gets by default), its merged
("_rep") form, and the networks ``RATIOS`` compares it with (UniRepLKNet and SLaK of its size),
each from its own network case at the same batch and input size. Each network is prepared and
verified by ``harness.models.bench.prepare``, exactly as its own network item is; one whose
preparation or verification fails is recorded (a failure of that network, in the run's record
and the row) and the others are compared. One timed round (``harness.paired.Rounds``) runs every
compared network once, in a fresh random order (seeded by the case), and pytest-benchmark times
the rounds (``Session.measure``, ``compare_rounds`` of the SW case: rounds enough for the
interval, ``cases/models.toml`` says why); the row (``harness.results.ComparisonRow``) keeps
every network's per-round times and the paired ratios SW / each other network
(``harness.paired.paired_ratio``: the geometric mean of per-round ratios, a bootstrap interval).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from harness import eligibility
from harness.bench import Prepared, Selection
from harness.eligibility import Purpose
from harness.models import bench
from harness.models.bench import ModelRun
from harness.models.layers import REFERENCE, resolve_impl
from harness.models.networks import NETWORKS, network_info
from harness.models.table7 import RATIOS
from harness.paired import Rounds, paired_ratio
from harness.results import ComparisonRow, PairedRatioEntry


class NothingToCompare(RuntimeError):
    """A comparison left with fewer than two networks (or without its SW network) after failures."""


def partners(network: str) -> tuple[str, ...]:
    """The networks Table 7 compares SW network ``network`` with: its merged form first (where
    there is one), then those of ``table7.RATIOS``."""
    return tuple(name for name in (f"{network}_rep", *(other for top, other in RATIOS if top == network)) if name in NETWORKS)


@dataclass(frozen=True)
class ComparisonItem:
    """One Table 7 comparison on a device as a benchmark item (``harness.bench.Item``)."""

    sw: ModelRun  # the SW network with its implementation
    others: tuple[ModelRun, ...]  # what it is compared with, in ``partners`` order
    skip: str | None = None
    kind = "comparison"

    @property
    def computation(self) -> str:
        return f"table7:{self.sw.computation}"

    @property
    def device(self) -> str:
        return self.sw.device

    @property
    def case_name(self) -> str:
        return self.sw.case.name

    @property
    def suite(self) -> str:
        return self.sw.case.suite

    @property
    def group(self) -> str:
        return f"{self.suite}/table7-{self.case_name}"

    @property
    def id(self) -> str:  # no network's name followed by an implementation: the GPU day's -k leaves it out
        return f"table7-{self.device}-{self.case_name}"

    @property
    def rounds(self) -> int:
        return self.sw.case.compare_rounds

    def prepare(self, session) -> Prepared:
        """Each network prepared and verified as its network item is, a failure recorded and
        left out; the timed call is one interleaved round of the others."""
        if self.skip:
            raise RuntimeError(f"{self.id} is not run here: {self.skip}")
        calls, checks, verified, failed, not_run = {}, {}, {}, {}, {}
        for run in (self.sw, *self.others):
            if run.skip:
                not_run[run.computation] = run.skip
                continue
            try:
                prepared = bench.prepare(run, session.dtype)
                verified[run.computation] = prepared.verify(prepared.run())  # its first call, as Session.measure checks it
            except Exception as error:  # that network is left out, the others are compared
                failed[run.computation] = f"{type(error).__name__}: {error} (its own item: {run.id})"
                session.part_failed(self, run.computation, run.case.name, error)
                continue
            calls[run.computation], checks[run.computation] = prepared.run, prepared.verify
        if self.sw.computation not in calls or len(calls) < 2:
            why = "; ".join(f"{name}: {error}" for name, error in {**not_run, **failed}.items())
            raise NothingToCompare(f"{self.id}: {sorted(calls) or 'no network'} left to compare ({why})")
        rounds = Rounds(calls, seed=self.sw.case.seed)
        names = tuple(calls)

        def run() -> tuple[torch.Tensor, ...]:
            return tuple(rounds.run().values())

        def verify(outputs: object) -> str:
            """Each network's logits of the round, by its own item's check."""
            for name, logits in zip(names, outputs, strict=True):
                checks[name](logits)
            return f"{len(names)} networks, each by its own network item's verification"

        case = self.sw.case

        def row(_: str) -> ComparisonRow:
            return ComparisonRow(
                computation=self.computation, case=case.name, suite=case.suite, device=self.device, batch=case.batch,
                height=case.height, width=case.width, dtype=str(session.dtype).removeprefix("torch."),
                threads=torch.get_num_threads() if self.device == "cpu" else None, implementation=self.sw.implementation,
                seed=case.seed, networks={r.computation: r.case.network for r in (self.sw, *self.others)},
                verified=verified, failed=failed, not_run=not_run, times={}, ratios=[],
            )  # fmt: skip

        def finish(done: ComparisonRow) -> ComparisonRow:
            """The timed rounds' times (the last ``rounds``: the warm-up round before them is left out)."""
            times = rounds.times(last=self.rounds)
            sw = times[self.sw.computation]
            ratios = [PairedRatioEntry(self.sw.computation, name, **dataclasses.asdict(paired_ratio(sw, times[name])))
                      for name in names if name != self.sw.computation]  # fmt: skip
            return dataclasses.replace(done, times={n: t.tolist() for n, t in times.items()}, ratios=ratios)

        return Prepared(run, verify, row, rounds=self.rounds, finish=finish)


def comparison_items(selection: Selection) -> list[ComparisonItem]:
    """A comparison per SW network case of the selected suites and tier and per device, with the
    networks ``partners`` names from cases at the same batch, input size and seed (its merged
    form: the same small kernel too). An SW case with none of them in the selection gives none;
    one that cannot run here is a skipped item with the reason."""
    suites = list(selection.suites) if selection.suites else None
    if not bench.load_model_cases(suites=suites):
        return []
    runs = bench.model_runs(suites, selection.tier, selection.devices, selection.dtype)
    items = []
    for device in selection.devices:
        here = [run for run in runs if run.device == device]
        best = resolve_impl("auto", device, selection.dtype)
        for case in dict.fromkeys(run.case for run in here):
            info = network_info(case.network)
            if info.family != "sw" or info.rep:
                continue
            others = []
            for name in partners(case.network):
                rep = network_info(name).family == "sw"
                found = [r for r in here if r.case.network == name and r.case.suite == case.suite
                         and (r.case.batch, r.case.height, r.case.width, r.case.seed) == (case.batch, case.height, case.width, case.seed)
                         and (not rep or r.case.small_kernel == case.small_kernel)]  # fmt: skip
                others += found[:1]
            if not others:
                continue
            if best == REFERENCE:
                reason = eligibility.reason(None, device, selection.dtype, Purpose.NETWORK)
                sw = ModelRun(case, device, None, reason or f"no SW implementation runs a network on {device} in {selection.dtype} here")
            else:
                (sw,) = [r for r in here if r.case == case and r.implementation == best]
            skip = sw.skip
            if skip is None and all(other.skip for other in others):
                skip = "none of the networks it is compared with runs here: " + "; ".join(f"{o.computation}: {o.skip}" for o in others)
            items.append(ComparisonItem(sw, tuple(others), skip))
    return items


__all__ = ["ComparisonItem", "NothingToCompare", "comparison_items", "partners"]
