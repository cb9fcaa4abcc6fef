"""harness.paired: interleaved rounds and the paired ratio, against known series."""

import itertools

import numpy as np
import pytest

from harness.paired import interleaved, paired_ratio


def test_a_constant_ratio_under_any_load_is_recovered_exactly_with_a_zero_width_interval():
    load = np.random.default_rng(1).uniform(1, 50, size=40)  # the machine's load, drifting per round
    result = paired_ratio(0.010 * load, 0.025 * load)
    assert result.ratio == pytest.approx(2.5) and result.low == pytest.approx(2.5) and result.high == pytest.approx(2.5)


def test_the_interval_covers_the_true_ratio_and_narrows_with_rounds():
    rng = np.random.default_rng(2)
    widths = []
    for rounds in (10, 200):
        load = rng.uniform(1, 3, size=rounds)
        a = 1.0 * load * rng.lognormal(0, 0.1, rounds)
        b = 1.3 * load * rng.lognormal(0, 0.1, rounds)
        result = paired_ratio(a, b)
        assert result.low <= 1.3 <= result.high
        widths.append(result.high - result.low)
    assert widths[1] < widths[0] / 2


def test_independent_medians_would_swing_where_the_pairing_does_not():
    # The load doubles half-way: a and b are timed in every round, so their ratio is unmoved.
    load = np.r_[np.ones(10), 2 * np.ones(10)]
    a, b = 1.0 * load, 1.5 * load
    assert paired_ratio(a[:10], b[10:]).ratio == pytest.approx(3.0)  # unpaired halves: wrong
    assert paired_ratio(a, b).ratio == pytest.approx(1.5)


def test_interleaved_runs_every_callable_once_per_round_in_shuffled_orders():
    calls, log = {}, []
    for name in "abc":
        calls[name] = lambda name=name: log.append(name)
    clock = itertools.count()
    times = interleaved(calls, rounds=6, warmup=1, timer=lambda: float(next(clock)))
    assert {name: len(t) for name, t in times.items()} == {"a": 6, "b": 6, "c": 6}
    assert all(np.all(t == 1.0) for t in times.values())  # one tick between start and stop
    rounds = [tuple(log[i : i + 3]) for i in range(3, len(log), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds) and len(set(rounds)) > 1


@pytest.mark.parametrize(("a", "b", "message"), [([1.0], [1.0], ">= 2 rounds"), ([1, 2], [1, 2, 3], "equal-length"),
                                                 ([1, 0], [1, 1], "> 0")])  # fmt: skip
def test_bad_series_are_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_ratio(a, b)


def test_one_round_is_refused():
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        interleaved({"a": lambda: None}, rounds=1)
