"""Where SW-tiny's forward time goes: the SW layers' share, and their time inside the network
against the same layers (and their implementation's deployed op alone) on the same inputs.

Paired rounds: each round runs one network forward (SW layers timed by forward hooks), then the
27 layers back to back on the inputs the hooks captured, then the implementation's ``deployed``
function directly on them; the medians over rounds are reported.

    .venv/bin/python reports/notes/sw_layer_share.py --batch 1 --rounds 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.models.layers import ShiftwiseConv2d, _implementation, registered_spec, resolve_impl
from harness.models.networks import build_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--impl", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
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
            start = time.perf_counter()
            for layer in layers:
                ones, zeros = layer.output_scale, layer.output_shift
                record.deployed(captured[id(layer)], layer.LoRA.weight, registered_spec(layer.spec_key), layer.branch_scale,
                                layer.branch_bias, ones, zeros, layer.rep, layer.ghost)  # fmt: skip
            op = time.perf_counter() - start
            rows.append((total, in_net, alone, op))
    total, in_net, alone, op = np.median(np.array(rows), axis=0)
    print(f"SW-tiny, batch {args.batch}, 224x224, {args.threads} threads, impl {impl}, {args.rounds} rounds (medians)")
    print(f"forward {1e3 * total:.1f} ms; SW layers inside {1e3 * in_net:.1f} ms ({100 * in_net / total:.1f}%)")
    print(f"same layers back to back {1e3 * alone:.1f} ms; {impl}'s deployed op alone {1e3 * op:.1f} ms")
    print(f"inside / op alone: {in_net / op:.2f}x; per-round ratio median {np.median([r[1] / r[3] for r in rows]):.2f}x")


if __name__ == "__main__":
    main()
