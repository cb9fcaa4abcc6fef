"""How much an SW layer's call costs when its data went cold: SW-tiny's deployed layers (one per
stage) called back to back, after the calling thread spun for a gap (it touches nothing of the
layer's, so only time passes), after it slept for the gap, and after a sweep of a buffer twice the
last-level cache.

On this shared 2-core VM (2026-12-04, idle, numba_cpu) a layer's call costs more the longer
since its last one, even when this process evicts nothing in between: a 7x7x640 layer took
~110 us back to back, ~135 after a 1 ms spin, ~315 after a 10 ms spin (as after a 64 MiB sweep);
with one thread (``OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1``, no worker to wake) the penalty was
as large, so it is not the torch/Numba thread hand-off but caches (and TLBs) shared with what
else runs on the host. It is what makes the layers slower inside the network than back to back
(``sw_layer_share.py``). Each round runs every (layer, condition) pair once in a fresh random
order; medians over rounds.

    .venv/bin/python reports/notes/cold_layer_calls.py --rounds 12
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from harness.models.layers import ShiftwiseConv2d
from harness.models.networks import build_network


def spin(seconds: float) -> None:
    """Busy-wait on this thread: time passes, nothing of the layer's is touched."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--impl", default="auto")
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--sweep-mib", type=int, default=64, help="cache sweep buffer (default 64: twice a 32 MiB L3)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    net = build_network("sw_tiny", args.impl).reparameterize().to(memory_format=torch.channels_last).eval()
    layers = [m for m in net.modules() if isinstance(m, ShiftwiseConv2d)]
    captured: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(lambda m, i: captured.__setitem__(id(m), i[0])) for layer in layers]
    x = torch.randn(args.batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        net(x)
    for hook in hooks:
        hook.remove()
    first_of_stage = {}
    for layer in layers:
        first_of_stage.setdefault(tuple(captured[id(layer)].shape[1:]), layer)
    sweep = torch.ones(args.sweep_mib * 2**20 // 4)
    gap = args.gap_ms / 1e3
    before = {
        "back to back": lambda layer: layer(captured[id(layer)]),  # the same call just before
        f"spin {args.gap_ms:g} ms": lambda layer: (layer(captured[id(layer)]), spin(gap)),
        f"sleep {args.gap_ms:g} ms": lambda layer: (layer(captured[id(layer)]), time.sleep(gap)),
        "cache sweep": lambda layer: (layer(captured[id(layer)]), sweep.add_(1.0)),
    }
    times: dict[tuple, list[float]] = {(s, c): [] for s in first_of_stage for c in before}
    with torch.inference_mode():
        for _ in range(args.rounds):
            pairs = list(times)
            random.shuffle(pairs)
            for shape, condition in pairs:
                layer = first_of_stage[shape]
                before[condition](layer)
                start = time.perf_counter()
                layer(captured[id(layer)])
                times[shape, condition].append(time.perf_counter() - start)
    print(f"SW-tiny deployed layers, batch {args.batch}, impl {args.impl}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds: median us per call")  # fmt: skip
    print(f"{'layer input (C, H, W)':24s}" + "".join(f"{c:>16s}" for c in before))
    for shape in first_of_stage:
        print(f"{str(shape):24s}" + "".join(f"{1e6 * np.median(times[shape, c]):16.0f}" for c in before))


if __name__ == "__main__":
    main()
