"""Training benchmarks: ``pytest --benchmark-only --suite training_layers`` (the operator's
forward + backward on the stage layers) and ``--suite training`` (networks' training steps).

The items are ``harness.models.training.layer_training_items`` (every implementation through
the custom op and every PyTorch way, on the layer cases of suites whose TOML says ``measures =
"training"``) and ``training_items`` (one per network, implementation and batch). Each is
verified before it is timed: a layer's gradients against the float64 reference's within the
gradient bound, a network's gradients against the same network on the reference path. What one
benchmark does is ``harness.bench.Session.measure``, as for the forward benchmarks.
"""


def test_layer_forward_backward(benchmark, layer_training_item, bench_session):
    bench_session.measure(benchmark, layer_training_item)


def test_training_step(benchmark, training_item, bench_session):
    bench_session.measure(benchmark, training_item)
