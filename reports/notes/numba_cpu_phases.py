"""Where numba_cpu's time goes on the SW-tiny stages at batch 4 (fp32): each of its two forms
forced (``forward(..., form=...)``, its public profiling switch), the channels form with its
merged-kernel memo missing on every call (two weight tensors alternated), and the fastest
PyTorch ways beside them, all timed interleaved in this process.

Run from the repository root: ``.venv/bin/python reports/notes/numba_cpu_phases.py [threads]``.
Prints median milliseconds of 15 rounds of 2 calls per variant and the spread (max-min)/median;
with one thread it measures process CPU time (robust to a busy machine), else wall time.
"""

import statistics
import sys
import time

import numba
import torch

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from harness import implementations  # noqa: E402
from harness.cases import Case  # noqa: E402
from harness.checking import CheckCase, make_inputs  # noqa: E402
from harness.peers import peers  # noqa: E402

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(threads)
numba.set_num_threads(threads)
clock = time.process_time if threads == 1 else time.perf_counter
forward = implementations()["numba_cpu"].fn

for sparsity in (0.0, 0.3):
    for name, big, channels, size in [("s1", 51, 60, 56), ("s2", 49, 122, 28), ("s3", 47, 246, 14), ("s4", 13, 492, 7)]:
        case = Case(f"tiny-{name}", big, 3, channels, 4, 4, size, size, "official", 0, sparsity)
        inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
        spec, x, weight = case.spec(), inputs.x, inputs.weight
        other = weight * 1.0001  # different contents: the memo misses on every alternate call
        flip = [weight, other]
        variants = {
            "planes": lambda: forward(x, weight, spec, form="planes"),
            "channels": lambda: forward(x, weight, spec, form="channels"),
            "channels_merge": lambda: forward(x, flip.reverse() or flip[0], spec, form="channels"),
            "chosen": lambda: forward(x, weight, spec),
        }
        for peer in ("rep_merged_cl", "rep_merged_cl_pad"):
            variants[peer] = peers()[peer].prepare(case, x, weight).run
        times = {label: [] for label in variants}
        for fn in variants.values():
            fn(), fn()
        for _ in range(15):
            for label, fn in variants.items():
                start = clock()
                fn(), fn()
                times[label].append((clock() - start) / 2)
        summary = {
            label: f"{statistics.median(v) * 1e3:.3f} ({(max(v) - min(v)) / statistics.median(v):.2f})"
            for label, v in times.items()
        }
        print(f"{case.name} sp={sparsity} B=4 threads={threads}:", summary, flush=True)
