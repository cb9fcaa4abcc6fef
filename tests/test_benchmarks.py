"""Throughput of every implementation and peer on the selected cases (``pytest --benchmark-only``).

Deselected in the normal test run. Options: ``--suite``, ``--tier quick|full``,
``--bench-device``, ``--peak-gflops``/``--peak-gbps``, ``--l2-flush`` (harness/bench_plugin.py).
Save results with ``--benchmark-json=FILE`` and turn them into a report with ``swbench report FILE``.
What one benchmark does (verify against the reference, time, record) is ``harness.bench.Session.measure``.
"""


def test_throughput(benchmark, computation, bench_device, bench_case, bench_session):
    # A wrong result raises ResultMismatch (an AssertionError) before anything is timed.
    row = bench_session.measure(benchmark, computation, bench_case, bench_device)
    assert row.verified, f"{row.computation} on {row.case}: timed without a verified result"
