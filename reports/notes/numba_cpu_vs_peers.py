"""numba_cpu against the PyTorch-way peers, side by side in one process, interleaved rounds, on
the SW-tiny and SW-small stage layers at B = 4, 1, 64 (sparsity 0) and SW-tiny at B = 4 with
sparsity 0.3 and 0.6 (fp32, official tables, inputs as the benchmarks make them).

Run from the repository root: ``.venv/bin/python reports/notes/numba_cpu_vs_peers.py THREADS [tiny4]``.
THREADS = 1 measures process CPU time (robust on a busy shared machine); otherwise wall time.
Prints per case the median and minimum milliseconds, the fastest of the merged-kernel PyTorch
ways timed here (torch.compile'd, cross-kernel and torch_roll peers are 2-100x slower on this
CPU and left out to keep the run short) and numba_cpu's speed against it.
"""
import os, sys, time, statistics, importlib, torch, numba
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import harness
from harness.peers import peers
from harness.cases import Case
from harness.checking import CheckCase, make_inputs
T = int(sys.argv[1]); torch.set_num_threads(T); numba.set_num_threads(T)
assert torch.get_num_threads() == T and numba.get_num_threads() == T
clock = time.process_time if T == 1 else time.perf_counter
impl = harness.implementations()["numba_cpu"]
nc = importlib.import_module(impl.fn.__module__)
stages = {"tiny": [(51, 60, 56), (49, 122, 28), (47, 246, 14), (13, 492, 7)],
          "small": [(51, 72, 56), (49, 146, 28), (47, 294, 14), (13, 590, 7)]}
plan = [(m, b, 0.0) for b in (4, 1, 64) for m in ("tiny", "small")] + [("tiny", 4, 0.3), ("tiny", 4, 0.6)]
only = sys.argv[2] if len(sys.argv) > 2 else None
for model, B, sp in plan:
    if only and only != f"{model}{B}":
        continue
    for s, (m, c, hw) in enumerate(stages[model], 1):
        case = Case(f"{model}-s{s}", m, 3, c, 4, B, hw, hw, "official", 0, sp)
        inp = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
        spec = case.spec()
        names = ["rep_merged", "rep_merged_cl", "rep_merged_cl_pad"] + (["rep_merged_sym"] if B <= 4 else [])
        runs = {"numba_cpu": lambda: impl(inp.x, inp.weight, spec)}
        for n in names:
            runs[n] = peers()[n].prepare(case, inp.x, inp.weight).run
        for fn in runs.values(): fn(); fn()
        t0 = time.perf_counter(); runs["rep_merged_cl"](); one = time.perf_counter() - t0
        reps = max(1, min(10, int(0.01 / max(one, 1e-5))))
        times = {n: [] for n in runs}
        for r in range(int(os.environ.get("ROUNDS", 11 if B < 64 else 5))):
            for n, fn in runs.items():
                t = clock()
                for _ in range(reps): fn()
                times[n].append((clock() - t) / reps)
        med = {n: statistics.median(v) * 1e3 for n, v in times.items()}
        low = {n: min(v) * 1e3 for n, v in times.items()}
        fastest = min(names, key=med.get)
        spread = (max(times["numba_cpu"]) - min(times["numba_cpu"])) / statistics.median(times["numba_cpu"])
        form = nc.choose_form(spec, case.input_shape, 4)
        print(f"T={T} {case.name} B={B} sp={sp} form={form} | numba_cpu {med['numba_cpu']:.3f} (min {low['numba_cpu']:.3f}, spread {spread:.2f}) | "
              f"fastest {fastest} {med[fastest]:.3f} (min {low[fastest]:.3f}) | speed {med[fastest]/med['numba_cpu']:.2f}x (by min {min(low[n] for n in names)/low['numba_cpu']:.2f}x) | "
              + " ".join(f"{n}={med[n]:.3f}" for n in names), flush=True)
