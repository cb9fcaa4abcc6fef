"""Model-level throughput (Table 7): ``pytest --benchmark-only --suite models``.

The items are ``harness.models.bench.network_items``: one per (network, implementation, batch)
of the selected model suites and tier, on the devices of ``--bench-device``, in
``--bench-dtype``. Each network is verified in float64 against the same network on the
reference path before it is timed (``harness.models.bench.verify_network``); what one
benchmark does is ``harness.bench.Session.measure``, as for the layers.

The comparison items (``harness.models.compare.comparison_items``) time the networks of each
Table 7 comparison interleaved, round by round, each prepared and verified as its own network
item is, for the ratios with their intervals from the paired rounds.
"""


def test_model_throughput(benchmark, network_item, bench_session):
    bench_session.measure(benchmark, network_item)


def test_table7_comparison(benchmark, comparison_item, bench_session):
    bench_session.measure(benchmark, comparison_item)
