"""Run every CUDA implementation's kernels once, verified: what compute-sanitizer and ncu wrap.

``python -m harness.gpuday.kernels --device cuda [--stage NAME]``: each registered
implementation that declares ``cuda`` runs once on a small layer (default) or on one of the
kernels report's stage shapes (``--stage tiny-s3-b64``), and its result is compared with the
reference. Exit 0 only when every one that could run matched; 1 on a mismatch or a crash; 3
when none could run. With ``--device cpu`` the host builds and Numba's simulator stand in (a
dry run of the GPU day).
"""

from __future__ import annotations

import argparse
import sys

import torch

from harness import Branches
from harness.cases import Case, figures_stages
from harness.checking import CheckCase, compare_with_reference, expected_result, make_inputs
from harness.cudac import report_stages
from harness.gpuday.phases import gpu_implementations

#: The small layer the sanitizers run (every kernel path: pruned kernels, a column tile edge).
SMALL = Case("sanitize-small", 13, 3, 8, 4, 2, 14, 12, tables="random", seed=3, sparsity=0.3, suite="gpu_day")
#: Its stand-in on the CPU (host builds and Numba's simulator run a thread per CUDA thread).
TINY = Case("sanitize-tiny", 7, 3, 4, 2, 1, 6, 5, tables="random", seed=3, sparsity=0.3, suite="gpu_day")


def _case(stage: str | None, device: str) -> Case:
    if stage is None:
        return TINY if device == "cpu" else SMALL
    names = [name for name, _, _ in report_stages()]
    if stage not in names:
        raise SystemExit(f"--stage: expected one of {names}, got {stage!r}")
    (case,) = [case for case in figures_stages()[1] if case.name == stage]
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.gpuday.kernels", description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--impl", action="append", help="only this implementation (repeatable; default: every CUDA one)")
    parser.add_argument("--stage", help="a kernels-report stage (e.g. tiny-s3-b64) instead of the small layer")
    args = parser.parse_args(argv)
    case = _case(args.stage, args.device)
    # Inputs and the reference on the CPU: under compute-sanitizer and ncu, the GPU runs the implementations' kernels only.
    inputs = make_inputs(CheckCase(case, "float32", "float"), nan_pruned=True)
    expected = expected_result(inputs.x, inputs.weight, case.spec(), exact=False)
    x, weight = inputs.x.to(args.device), inputs.weight.to(args.device)
    ran = failed = 0
    impls = [impl for impl in gpu_implementations() if not args.impl or impl.name in args.impl]
    if args.impl and len(impls) != len(set(args.impl)):
        raise SystemExit(f"--impl: expected CUDA implementations among {[i.name for i in gpu_implementations()]}, got {args.impl}")
    for impl in impls:
        reason = impl.unavailable_reason(args.device)
        if reason is not None:
            print(f"{impl.name}: not run: {reason}")
            continue
        try:
            with torch.no_grad():
                got = impl(x, weight, case.spec())
            problems = compare_with_reference(Branches(*(branch.cpu() for branch in got)), expected, torch.float32)
        except Exception as error:  # reported and counted; the other implementations still run
            problems = [f"{type(error).__name__}: {error}"]
        ran += 1
        failed += bool(problems)
        print(f"{impl.name} on {case.name} ({args.device}): " + ("; ".join(problems) if problems else "matches the reference"))
    print(f"{ran} implementations ran, {failed} failed")
    return 3 if ran == 0 else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
