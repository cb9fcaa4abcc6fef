"""Where SW-tiny's forward time goes: the SW layers' share, and their time inside the network
against the same layers (and their implementation's deployed op alone) on the same inputs.

Paired rounds: each round runs one network forward (SW layers timed by forward hooks), then the
27 layers back to back on the inputs the hooks captured, then the same layers each timed after a
sweep of a buffer twice the last-level cache (what the MLP between them could evict, at most),
then the implementation's ``deployed`` function directly on them; the medians over rounds are
reported. ``--numba-omp-wait-policy PASSIVE`` starts Numba's OpenMP runtime (a second one beside
torch's, loaded at Numba's first parallel call) with idle threads that sleep at once instead of
spinning, to see whether threads of one pool spinning while the other works explain the gap.

    .venv/bin/python reports/notes/sw_layer_share.py --batch 1 --rounds 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.models.layers import ShiftwiseConv2d, _implementation, registered_spec, resolve_impl
from harness.models.networks import build_network


def start_numba_threads(wait_policy: str) -> None:
    """Start Numba's threading layer with ``OMP_WAIT_POLICY=wait_policy`` (read by its OpenMP
    runtime when it loads; torch's already runs), then restore the environment."""
    import os

    import numba

    before = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = wait_policy
    try:
        numba.np.ufunc.parallel._launch_threads()
    finally:
        if before is None:
            del os.environ["OMP_WAIT_POLICY"]
        else:
            os.environ["OMP_WAIT_POLICY"] = before
    print(f"Numba threading layer {numba.threading_layer()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--impl", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--numba-omp-wait-policy", choices=["ACTIVE", "PASSIVE"], default=None)
    parser.add_argument("--sweep-mib", type=int, default=64, help="cache sweep buffer (default 64: twice a 32 MiB L3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.ones(64, 64) @ torch.ones(64, 64)  # torch's OpenMP runtime starts with the environment as it was
    if args.numba_omp_wait_policy:
        start_numba_threads(args.numba_omp_wait_policy)
    sweep = torch.ones(args.sweep_mib * 2**20 // 4)
    net = build_network("sw_tiny", args.impl).reparameterize().to(memory_format=torch.channels_last)
    layers = [m for m in net.modules() if isinstance(m, ShiftwiseConv2d)]
    impl = resolve_impl(args.impl, "cpu")
    record = _implementation(impl)
    captured: dict[int, torch.Tensor] = {}
    inside: dict[int, float] = {}
    starts: dict[int, float] = {}

    def before(module, inputs):
        captured[id(module)] = inputs[0]
        starts[id(module)] = time.perf_counter()

    def after(module, inputs, output):
        inside[id(module)] = time.perf_counter() - starts[id(module)]

    for layer in layers:
        layer.register_forward_pre_hook(before)
        layer.register_forward_hook(after)
    x = torch.randn(args.batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    rows = []
    with torch.inference_mode():
        net(x)
        for _ in range(args.rounds):
            start = time.perf_counter()
            net(x)
            total = time.perf_counter() - start
            in_net = sum(inside.values())
            start = time.perf_counter()
            for layer in layers:
                layer(captured[id(layer)])
            alone = time.perf_counter() - start
            evicted = 0.0
            for layer in layers:
                sweep.add_(1.0)
                start = time.perf_counter()
                layer(captured[id(layer)])
                evicted += time.perf_counter() - start
            start = time.perf_counter()
            for layer in layers:
                ones, zeros = layer.output_scale, layer.output_shift
                record.deployed(captured[id(layer)], layer.LoRA.weight, registered_spec(layer.spec_key), layer.branch_scale,
                                layer.branch_bias, ones, zeros, layer.rep, layer.ghost)  # fmt: skip
            op = time.perf_counter() - start
            rows.append((total, in_net, alone, evicted, op))
    total, in_net, alone, evicted, op = np.median(np.array(rows), axis=0)
    print(f"SW-tiny, batch {args.batch}, 224x224, {args.threads} threads, impl {impl}, {args.rounds} rounds (medians), "
          f"Numba OpenMP wait policy {args.numba_omp_wait_policy or 'default'}")  # fmt: skip
    print(f"forward {1e3 * total:.1f} ms; SW layers inside {1e3 * in_net:.1f} ms ({100 * in_net / total:.1f}%)")
    print(f"same layers back to back {1e3 * alone:.1f} ms; each after a {args.sweep_mib} MiB cache sweep "
          f"{1e3 * evicted:.1f} ms; {impl}'s deployed op alone {1e3 * op:.1f} ms")  # fmt: skip
    print(f"inside / op alone: {in_net / op:.2f}x; per-round ratio median {np.median([r[1] / r[4] for r in rows]):.2f}x")


if __name__ == "__main__":
    main()
