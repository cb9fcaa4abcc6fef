"""Model-level throughput (Table 7): ``pytest --benchmark-only --suite models``.

The items are ``harness.models.bench.network_items``: one per (network, implementation, batch)
of the selected model suites and tier, on the devices of ``--bench-device``, in
``--bench-dtype``. Each network is verified in float64 against the same network on the
reference path before it is timed (``harness.models.bench.verify_network``); what one
benchmark does is ``harness.bench.Session.measure``, as for the layers.
"""


def test_model_throughput(benchmark, network_item, bench_session):
    bench_session.measure(benchmark, network_item)
