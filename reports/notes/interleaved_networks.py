"""Table 7's CPU comparison, timed interleaved: SW-tiny deployed against UniRepLKNet-T and SLaK-T.

Every network is built randomised, reparameterized (``reparameterize()``, what the official
throughput scripts call), eval, float32, and run in each memory format it may use; each round
times one forward of every (network, layout) in a fresh random order, so that all see the same
machine load. A ratio is estimated from the paired rounds: the mean of log(time_b / time_a)
over rounds, with a bootstrap 95% interval (resampling rounds). Subnormals are flushed
(``torch.set_flush_denormal``); ``--keep-denormals`` times without flushing, to show whether
it matters.

    .venv/bin/python reports/notes/interleaved_networks.py --batch 1 --rounds 30
"""

from __future__ import annotations

import argparse
import copy
import random
import time

import numpy as np
import torch

from harness.models.networks import build_network
from harness.paired import paired_ratio

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def build(name: str, impl: str | None) -> torch.nn.Module:
    net = build_network(name, impl) if impl else build_network(name)
    return net.reparameterize() if hasattr(net, "reparameterize") else net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--impl", default="auto", help="SW-tiny's implementation (default: impl='auto')")
    parser.add_argument("--networks", default="sw_tiny,unireplknet_tiny,slak_tiny")
    parser.add_argument("--keep-denormals", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.keep_denormals:
        torch.set_flush_denormal(True)
    names = args.networks.split(",")
    built = {name: build(name, args.impl if name.startswith("sw_") else None) for name in names}
    # One instance per (network, layout), converted once: converting a network between rounds
    # gives it new parameter tensors, and its next forward pays for whatever is cached on them
    # (numba_cpu's folded kernels), an ~18 ms penalty for SW-tiny at B=1 in an earlier version.
    nets = {(name, layout): copy.deepcopy(net).to(memory_format=fmt)
            for name, net in built.items() for layout, fmt in LAYOUTS.items()}  # fmt: skip
    torch.manual_seed(0)
    image = torch.randn(args.batch, 3, args.size, args.size)
    entries = list(nets)
    inputs = {layout: image.contiguous(memory_format=fmt) for layout, fmt in LAYOUTS.items()}
    times: dict[tuple[str, str], list[float]] = {entry: [] for entry in entries}
    order = random.Random(0)
    with torch.inference_mode():
        for name, layout in entries:  # warm-up: compile, allocate, first-touch
            nets[(name, layout)](inputs[layout])
            nets[(name, layout)](inputs[layout])
        for _ in range(args.rounds):
            order.shuffle(entries)
            for name, layout in entries:
                net = nets[(name, layout)]
                start = time.perf_counter()
                net(inputs[layout])
                times[(name, layout)].append(time.perf_counter() - start)
    arrays = {entry: np.array(t) for entry, t in times.items()}
    print(f"batch {args.batch}, {args.size}x{args.size}, float32, {args.threads} threads, {args.rounds} rounds, "
          f"flush_denormal={not args.keep_denormals}, SW impl={args.impl}")  # fmt: skip
    print(f"{'network':<18} {'layout':<14} {'median ms':>10} {'images/s':>9}")
    best = {}
    for (name, layout), t in sorted(arrays.items()):
        print(f"{name:<18} {layout:<14} {1e3 * np.median(t):10.1f} {args.batch / np.median(t):9.2f}")
        if name not in best or np.median(t) < np.median(arrays[best[name]]):
            best[name] = (name, layout)
    sw = best[names[0]]
    for other in names[1:]:
        print(f"{sw[0]} ({sw[1]}) / {other} ({best[other][1]}) images/s: {paired_ratio(arrays[sw], arrays[best[other]])}")


if __name__ == "__main__":
    main()
