"""Throughput of every implementation and peer on the selected cases (``pytest --benchmark-only``).

Deselected in the normal test run. Options: ``--suite``, ``--tier quick|full``,
``--bench-device``, ``--peak-gflops``/``--peak-gbps``, ``--l2-flush`` (harness/bench_plugin.py).
Save results with ``--benchmark-json=FILE`` and turn them into a report with ``swbench report FILE``.
The items are ``harness.bench.layer_items``; what one benchmark does (verify against the
reference, time, record) is ``harness.bench.Session.measure``: a wrong result raises there,
before anything is timed.

The comparison items (``harness.layer_compare.layer_comparison_items``) time a case's
implementations and PyTorch ways interleaved, round by round, each prepared and verified as its
own layer item is, for the speedups with their intervals from the paired rounds.
"""


def test_throughput(benchmark, layer_item, bench_session):
    bench_session.measure(benchmark, layer_item)


def test_interleaved_speedup(benchmark, layer_comparison_item, bench_session):
    bench_session.measure(benchmark, layer_comparison_item)
