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
from harness.paired import interleaved, paired_ratio  # noqa: E402

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
parts = sys.argv[2:] or ["layers", "networks"]
torch.set_num_threads(threads)
numba.set_num_threads(threads)


def spread(values):
    return (max(values) - min(values)) / statistics.median(values)


if "layers" in parts:
    print("SW-tiny stage layers, B=4, forward + backward, ms (median of 11 interleaved rounds); ratios from the paired rounds")
    for sparsity in (0.0, 0.3):
        for name, big, channels, size in [("s1", 51, 60, 56), ("s2", 49, 122, 28), ("s3", 47, 246, 14), ("s4", 13, 492, 7)]:
            case = Case(f"tiny-{name}", big, 3, channels, 4, 4, size, size, "official", 0, sparsity)
            inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=False)
            ways = layer_ways(case, inputs.x, inputs.weight)
            keep = {k: ways[k] for k in ("numba_cpu", "reference", "merged_autograd_cl", "merged_autograd_nchw") if k in ways}
            times = interleaved(keep, 11)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            text = "  ".join(f"{k} {m:.2f} (±{spread(times[k]):.0%})" for k, m in med.items())
            print(f"  sp={sparsity} {name}: {text}  merged_autograd_cl / numba_cpu "
                  f"{paired_ratio(times['numba_cpu'], times['merged_autograd_cl'])}", flush=True)

if "networks" in parts:
    batch = 8
    steps = {
        "sw_tiny/numba_cpu": network_step("sw_tiny", "numba_cpu", batch),
        "sw_tiny/reference": network_step("sw_tiny", "reference", batch),
        "unireplknet_tiny": network_step("unireplknet_tiny", batch=batch),
        "slak_tiny": network_step("slak_tiny", batch=batch),
    }
    times = interleaved(steps, 5)
    print(f"Training step, B={batch}, 224x224, AdamW: images/s (median of 5 rounds)")
    ips = {k: batch / statistics.median(v) for k, v in times.items()}
    for k, v in ips.items():
        print(f"  {k}: {v:.2f} images/s (±{spread(times[k]):.0%})")
    sw = times["sw_tiny/numba_cpu"]
    print(f"  SW-tiny/numba_cpu images/s vs UniRepLKNet-T {paired_ratio(sw, times['unireplknet_tiny'])}, "
          f"vs SLaK-T {paired_ratio(sw, times['slak_tiny'])}")
