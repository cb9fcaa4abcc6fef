"""Issue 20's trial, re-run: invalid and hostile inputs given to ``swbench``, the pytest plugin and
the Python API, each in a fresh process in a scratch folder, with its exit code and the last line
it printed. A verdict is ``ok`` when the exit code is the one expected, the expected words are in
the output and no Python traceback was printed; else ``WRONG`` (and the table says what came).

    .venv/bin/python reports/notes/hostile_inputs.py [--only SUBSTRING] > hostile.md

Each entry: (class, what is tried, setup, command, expected exit code, words the output must hold).
Commands run from the repository root with ``{tmp}`` replaced by the entry's scratch folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SWBENCH = [str(BIN / "swbench")]
PYTEST = [str(BIN / "pytest"), "-p", "no:randomly", "-p", "no:cacheprovider", "-q", "-n", "0"]
PY = [sys.executable, "-c"]
CASE = "name=tiny big_kernel=7 small_kernel=3 channels=2 groups=1 batch=1 height=5 width=5 mode=exact dtype=float32"
USAGE, FAILED, NOTHING = 2, 1, 3


def impl(name: str, body: str) -> str:
    return (
        "import os, signal, time\nimport torch\nfrom harness import reference_forward\n"
        "from harness.registry import Computes, Implementation\n"
        f"def forward(x, weight, spec):\n{body}\n"
        "    return tuple(b.to(x.dtype) for b in reference_forward(x, weight, spec))\n"
        f"IMPLEMENTATION = Implementation(name={name!r}, fn=forward, computes=Computes.OPERATOR,\n"
        "    devices=('cpu',), dtypes=(torch.float32, torch.float64))\n"
    )


def write(files: dict[str, str]):
    def setup(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)

    return setup


_RUN: dict[str, str] = {}


def a_run(tmp: Path) -> None:
    """A small real benchmark JSON at {tmp}/run.json (one implementation, one case), made once."""
    if "text" not in _RUN:
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "run.json"
            subprocess.run([*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--benchmark-max-time=0.01",
                            "--benchmark-min-rounds=1", f"--benchmark-json={out}", "-k", "numba_cpu and tiny-s4"],
                           cwd=ROOT, capture_output=True, timeout=900)  # fmt: skip
            _RUN["text"] = out.read_text() if out.exists() else "{}"
    (tmp / "run.json").write_text(_RUN["text"])


def with_run(files: dict[str, str]):
    def setup(tmp: Path) -> None:
        a_run(tmp)
        write(files)(tmp)

    return setup


def mistyped(tmp: Path) -> None:
    a_run(tmp)
    data = json.loads((tmp / "run.json").read_text())
    for bench in data.get("benchmarks", []):
        for key in list(bench.get("extra_info", {}))[:3]:
            bench["extra_info"][key] = {"not": "what it should be"}
    (tmp / "mistyped.json").write_text(json.dumps(data))


ENTRIES = [
    # ---- swbench check: arguments
    ("usage", "--case ''", None, [*SWBENCH, "check", "--case", ""], USAGE, "missing keys"),
    ("usage", "--case with an even big kernel", None, [*SWBENCH, "check", "--case", CASE.replace("big_kernel=7", "big_kernel=8")], USAGE, "big_kernel"),
    ("usage", "--case with a huge map (TiB)", None, [*SWBENCH, "check", "--case", "name=h big_kernel=51 small_kernel=3 channels=4000 groups=4 height=2000 width=2000 batch=64"], USAGE, "needs at least"),
    ("usage", "--case with an unknown key", None, [*SWBENCH, "check", "--case", CASE + " colour=red"], USAGE, "unknown keys"),
    ("usage", "--case with a bad type", None, [*SWBENCH, "check", "--case", CASE.replace("height=5", "height=five")], USAGE, "height must be int"),
    ("usage", "--case combined with --tier full", None, [*SWBENCH, "check", "--case", CASE, "--tier", "full"], USAGE, "cannot be combined"),
    ("usage", "--timeout 0", None, [*SWBENCH, "check", "--timeout", "0"], USAGE, "> 0"),
    ("usage", "--timeout -5", None, [*SWBENCH, "check", "--timeout", "-5"], USAGE, "> 0"),
    ("usage", "--impl bogus", None, [*SWBENCH, "check", "--impl", "bogus"], USAGE, "unknown implementation"),
    ("usage", "--device tpu", None, [*SWBENCH, "check", "--device", "tpu", "--case", CASE], USAGE, "device"),
    ("usage", "--suite nosuch", None, [*SWBENCH, "check", "--suite", "nosuch"], USAGE, "nosuch"),
    ("usage", "--cases-dir that does not exist", None, [*SWBENCH, "check", "--cases-dir", "{tmp}/none"], USAGE, "cases"),
    ("usage", "--jobs 0", None, [*SWBENCH, "check", "--jobs", "0"], USAGE, "jobs"),
    ("usage", "--random -1", None, [*SWBENCH, "check", "--random", "-1"], USAGE, "random"),
    ("usage", "--mode fast", None, [*SWBENCH, "check", "--mode", "fast"], USAGE, "invalid choice"),
    ("usage", "a broken TOML in --cases-dir", write({"c/bad.toml": "[[case]\nname="}), [*SWBENCH, "check", "--cases-dir", "{tmp}/c", "--suite", "bad"], USAGE, "bad.toml"),
    # ---- swbench check: implementations
    ("false green", "an empty implementations folder", write({"impls/.keep": ""}), [*SWBENCH, "--impls-dir", "{tmp}/impls", "check", "--case", CASE], NOTHING, "no implementations"),
    ("load error", "only an implementation that fails to load", write({"impls/broken.py": "this is not python"}), [*SWBENCH, "--impls-dir", "{tmp}/impls", "list"], FAILED, "load error broken.py"),
    ("false green", "an implementation calling os._exit(0)", write({"impls/exits.py": impl("exits", "    os._exit(0)")}), [*SWBENCH, "--impls-dir", "{tmp}/impls", "check", "--case", CASE], FAILED, "crash"),
    ("isolation", "an implementation that segfaults", write({"impls/segv.py": impl("segv", "    os.kill(os.getpid(), signal.SIGSEGV)")}), [*SWBENCH, "--impls-dir", "{tmp}/impls", "check", "--case", CASE], FAILED, "crash"),
    ("isolation", "an implementation that hangs (--timeout 3)", write({"impls/hangs.py": impl("hangs", "    time.sleep(3600)")}), [*SWBENCH, "--impls-dir", "{tmp}/impls", "check", "--case", CASE, "--timeout", "3"], FAILED, "timeout"),
    ("isolation", "an implementation that raises", write({"impls/raises.py": impl("raises", "    raise RuntimeError('boom')")}), [*SWBENCH, "--impls-dir", "{tmp}/impls", "check", "--case", CASE], FAILED, "boom"),
    ("reproducer", "a case name with spaces and a quote", None, [*SWBENCH, "check", "--impl", "torch_roll", "--case", CASE.replace("name=tiny", "name=\"it's a case\"")], 0, "passed"),
    # ---- swbench report
    ("usage", "report of a file that does not exist", None, [*SWBENCH, "report", "{tmp}/none.json", "--output", "{tmp}/r.md"], USAGE, "none.json"),
    ("usage", "report of a file that is not JSON", write({"bad.json": "{not json"}), [*SWBENCH, "report", "{tmp}/bad.json", "--output", "{tmp}/r.md"], USAGE, "bad.json"),
    ("nothing lost", "report whose output names its input", a_run, [*SWBENCH, "report", "{tmp}/run.json", "--output", "{tmp}/run.json", "--overwrite"], USAGE, "input"),
    ("nothing lost", "report onto an existing file without --overwrite", with_run({"r.md": "earlier"}), [*SWBENCH, "report", "{tmp}/run.json", "--output", "{tmp}/r.md"], USAGE, "exists"),
    ("usage", "report --noise-floor -1", a_run, [*SWBENCH, "report", "{tmp}/run.json", "--output", "{tmp}/r.md", "--noise-floor", "-1"], USAGE, "noise-floor"),
    ("usage", "report of a run JSON with mistyped fields", mistyped, [*SWBENCH, "report", "{tmp}/mistyped.json", "--output", "{tmp}/r.md"], USAGE, "mistyped.json"),
    # ---- swbench kernels
    ("nothing lost", "kernels onto an existing file without --overwrite", write({"k.md": "earlier"}), [*SWBENCH, "kernels", "--output", "{tmp}/k.md"], USAGE, "exists"),
    # ---- pytest plugin
    ("usage", "pytest --benchmark-only --suite nosuch", None, [*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--suite", "nosuch"], 4, "nosuch"),
    ("usage", "pytest --benchmark-only --tier bogus", None, [*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--tier", "bogus"], 4, "bogus"),
    ("usage", "an unknown Hypothesis profile", None, ["env", "SW_HYPOTHESIS_PROFILE=bogus", *PYTEST, "tests/test_spec.py"], 4, "SW_HYPOTHESIS_PROFILE"),
    ("usage", "pytest --hypothesis-profile bogus", None, [*PYTEST, "tests/test_spec.py", "--hypothesis-profile", "bogus"], 4, "--hypothesis-profile"),
    ("usage", "pytest --benchmark-only --peak-gflops -1", None, [*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--peak-gflops=-1"], 4, "expected a number > 0"),
    ("usage", "pytest --benchmark-only --peak-gbps inf", None, [*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--peak-gbps=inf"], 4, "expected a number > 0"),
    ("usage", "pytest --benchmark-only --bench-timeout 0", None, [*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--bench-timeout=0"], 4, "expected a number > 0"),
    ("usage", "pytest --benchmark-only --bench-dtype float16", None, [*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--bench-dtype", "float16"], 4, "invalid choice"),
    ("usage", "pytest --benchmark-only --bench-device tpu", None, [*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--bench-device", "tpu"], 4, "invalid choice"),
    ("false green", "a benchmark run whose selection times nothing", None, [*PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "-k", "no_such_item", "--benchmark-json={tmp}/run.json"], 5, "deselected"),
    ("isolation", "an implementation that hangs only when timed (--bench-timeout 2)", write({"impls/hangs.py": open(ROOT / "tests/bad_impls/hangs_when_timed.py").read()}),
     ["env", "SW_IMPLS_DIR={tmp}/impls", *PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--suite", "sweep_small_kernel", "-k", "k3 and bad_hangs_when_timed-cpu",
      "--bench-timeout=2", "--benchmark-max-time=0.01", "--benchmark-json={tmp}/run.json"], 1, "ran past its time limit of 2 s"),
    ("false green", "a benchmark run beside an implementation file that fails to load", write({"impls/broken.py": "this is not python"}),
     ["env", "SW_IMPLS_DIR={tmp}/impls", *PYTEST, "tests/test_benchmarks.py", "--benchmark-only", "--suite", "sweep_small_kernel", "-k", "k3 and rep_merged-cpu",
      "--benchmark-max-time=0.01", "--benchmark-json={tmp}/run.json"], 0, "implementation file did not load: broken.py"),
    # ---- swbench: other commands
    ("usage", "swbench check --tier bogus", None, [*SWBENCH, "check", "--tier", "bogus"], USAGE, "invalid choice"),
    ("usage", "swbench --impls-dir that does not exist", None, [*SWBENCH, "--impls-dir", "{tmp}/none", "list"], USAGE, "none"),
    ("usage", "swbench report with no input", None, [*SWBENCH, "report", "--output", "{tmp}/r.md"], USAGE, "required"),
    ("usage", "swbench report --baseline that does not exist", a_run, [*SWBENCH, "report", "{tmp}/run.json", "--output", "{tmp}/r.md", "--baseline", "{tmp}/none.json"], USAGE, "none.json"),
    ("nothing lost", "swbench report onto a folder", a_run, [*SWBENCH, "report", "{tmp}/run.json", "--output", "{tmp}"], USAGE, "output"),
    ("usage", "swbench cluster --target with an unknown key", None, [*SWBENCH, "cluster", "--target", "box:colour=red", "--output", "{tmp}/c"], USAGE, "colour"),
    ("usage", "swbench cluster --parallel 0", None, [*SWBENCH, "cluster", "--parallel", "0", "--output", "{tmp}/c"], USAGE, "parallel"),
    ("nothing lost", "swbench cluster into a used folder", write({"c/earlier.json": "{}"}), [*SWBENCH, "cluster", "--output", "{tmp}/c"], USAGE, "c"),
    ("usage", "swbench gpu --budget -1", None, [*SWBENCH, "gpu", "--dry-run", "--budget", "-1", "--output", "{tmp}/g"], USAGE, "budget"),
    # ---- Python API
    ("api", "build_network(impl='bogus')", None, [*PY, "from harness.models import build_network; build_network('sw_tiny', 'bogus')"], 1, "bogus"),
    ("api", "ShiftwiseConv2d(80, 81, 51): out_channels != in_channels", None, [*PY, "from harness.models.layers import ShiftwiseConv2d; ShiftwiseConv2d(80, 81, 51)"], 1, "out_channels"),
    ("api", "a layer given the wrong channel count", None, [*PY, "import torch; from harness.models.layers import ShiftwiseConv2d; ShiftwiseConv2d(8, 8, 13)(torch.randn(1, 9, 8, 8))"], 1, "channels"),
    ("api", "ShiftwiseConv2d(8, 8, 13, stride=2)", None, [*PY, "from harness.models.layers import ShiftwiseConv2d; ShiftwiseConv2d(8, 8, 13, stride=2)"], 1, "stride"),
    ("api", "build_network('nosuch')", None, [*PY, "from harness.models import build_network; build_network('nosuch')"], 1, "nosuch"),
    ("api", "ShiftwiseSpec with an even big kernel", None, [*PY, "from harness import ShiftwiseSpec; ShiftwiseSpec.official(big_kernel=8, small_kernel=3, channels=4, groups=4)"], 1, "big_kernel"),
    ("api", "reference_forward with a weight of the wrong shape", None, [*PY, "import torch; from harness import ShiftwiseSpec, reference_forward; s = ShiftwiseSpec.official(big_kernel=7, small_kernel=3, channels=4, groups=1); reference_forward(torch.randn(1, 4, 5, 5), torch.randn(3, 1, 3, 3), s)"], 1, "weight"),
    ("api", "reference_forward with a 3-D input", None, [*PY, "import torch; from harness import ShiftwiseSpec, reference_forward; s = ShiftwiseSpec.official(big_kernel=7, small_kernel=3, channels=4, groups=1); reference_forward(torch.randn(4, 5, 5), torch.randn(s.weight_shape), s)"], 1, "4-D"),
]


def run(entry, timeout: float) -> dict:
    kind, what, setup, command, expected, words = entry
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        if setup:
            setup(tmp)
        argv = [part.replace("{tmp}", scratch) for part in command]
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            code, text = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired:
            code, text = "timed out", ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if words.lower() in line.lower()), lines[-1] if lines else "")
    # an implementation's own load error is shown with its traceback (the author's code, not the harness's)
    traceback = "Traceback (most recent call last)" in text and kind not in ("api", "load error")
    api_one_line = kind != "api" or sum(line.startswith(("ValueError", "TypeError")) for line in lines) == 1
    ok = code == expected and words.lower() in text.lower() and not traceback and api_one_line
    return {"kind": kind, "what": what, "code": code, "expected": expected, "ok": ok, "said": last[:160]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run only entries whose description holds this")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per entry")
    args = parser.parse_args()
    results = [run(entry, args.timeout) for entry in ENTRIES if args.only in entry[1]]
    print("| # | class | input | exit (expected) | verdict | what it said |\n|---|---|---|---|---|---|")
    for number, r in enumerate(results, 1):
        said = r["said"].replace("|", "\\|")
        print(f"| {number} | {r['kind']} | {r['what']} | {r['code']} ({r['expected']}) | {'ok' if r['ok'] else 'WRONG'} | {said} |", flush=True)
    wrong = sum(not r["ok"] for r in results)
    print(f"\n{len(results) - wrong} of {len(results)} handled as expected.")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
