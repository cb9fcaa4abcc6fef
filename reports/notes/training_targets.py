"""Issue 22's targets, measured side by side in one process, interleaved round by round:

1. the SW operator's forward + backward (gradients of x and of the kernels) with numba_cpu
   through the custom op, against autograd of the merged strips in channels_last (and NCHW),
   on every SW-tiny stage at B=4, sparsity 0 and 0.3;
2. a training step (forward, cross-entropy, backward, AdamW) of SW-tiny with numba_cpu,
   UniRepLKNet-T and SLaK-T (training form) at B=8, 224x224.

Run from the repository root: ``.venv/bin/python reports/notes/training_targets.py [threads] [layers|networks]``
(default 2 threads, both parts). Prints the median of the rounds (wall time) and the spread.
"""

import dataclasses
import statistics
import sys
import time

import numba
import torch

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from harness.cases import Case  # noqa: E402
from harness.checking import CheckCase, make_inputs  # noqa: E402
from harness.models.training import layer_ways, network_step  # noqa: E402

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
parts = sys.argv[2:] or ["layers", "networks"]
torch.set_num_threads(threads)
numba.set_num_threads(threads)


def interleaved(calls: dict, rounds: int, per_round: int = 1) -> dict:
    for fn in calls.values():
        fn()
    times = {label: [] for label in calls}
    for _ in range(rounds):
        for label, fn in calls.items():
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            times[label].append((time.perf_counter() - start) / per_round)
    return times


def spread(values):
    return (max(values) - min(values)) / statistics.median(values)


if "layers" in parts:
    print("SW-tiny stage layers, B=4, forward + backward, ms (median of 11 rounds); ratio = merged_autograd_cl / numba_cpu")
    for sparsity in (0.0, 0.3):
        for name, big, channels, size in [("s1", 51, 60, 56), ("s2", 49, 122, 28), ("s3", 47, 246, 14), ("s4", 13, 492, 7)]:
            case = Case(f"tiny-{name}", big, 3, channels, 4, 4, size, size, "official", 0, sparsity)
            inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=False)
            ways = layer_ways(case, inputs.x, inputs.weight)
            keep = {k: ways[k] for k in ("numba_cpu", "reference", "merged_autograd_cl", "merged_autograd_nchw") if k in ways}
            times = interleaved(keep, 11, 2)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            text = "  ".join(f"{k} {m:.2f} (±{spread(times[k]):.0%})" for k, m in med.items())
            print(f"  sp={sparsity} {name}: {text}  ratio {med['merged_autograd_cl'] / med['numba_cpu']:.2f}x", flush=True)

if "networks" in parts:
    batch = 8
    steps = {
        "sw_tiny/numba_cpu": network_step("sw_tiny", "numba_cpu", batch),
        "sw_tiny/reference": network_step("sw_tiny", "reference", batch),
        "unireplknet_tiny": network_step("unireplknet_tiny", batch=batch),
        "slak_tiny": network_step("slak_tiny", batch=batch),
    }
    times = interleaved(steps, 3)
    print(f"Training step, B={batch}, 224x224, AdamW: images/s (median of 3 rounds)")
    ips = {k: batch / statistics.median(v) for k, v in times.items()}
    for k, v in ips.items():
        print(f"  {k}: {v:.2f} images/s (±{spread(times[k]):.0%})")
    sw = ips["sw_tiny/numba_cpu"]
    print(f"  SW-tiny/numba_cpu vs UniRepLKNet-T {sw / ips['unireplknet_tiny']:.2f}x, vs SLaK-T {sw / ips['slak_tiny']:.2f}x")
