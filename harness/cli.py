"""``swbench``: list the implementations, check them against the reference, build reports."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.cases import Case, load_cases
from harness.checking import DTYPES, MODES, CheckCase, CheckResult, check
from harness.files import write_text_atomically
from harness.registry import discover

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Not a terminal (CI logs, pipes): wide enough that tables and reproducers stay on one line.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    return args.command(args, console)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swbench", description=__doc__)
    parser.add_argument(
        "--impls-dir", help="folder of implementation files (default: $SW_IMPLS_DIR, else the project's impls/)"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="implementations, devices, availability, load errors")
    listing.set_defaults(command=_list)

    checking = commands.add_parser("check", help="equivalence of implementations with the reference")
    checking.set_defaults(command=_check)
    checking.add_argument("--impl", action="append", help="only this implementation (repeatable)")
    checking.add_argument("--device", default="cpu", help="torch device to check on (default: cpu)")
    checking.add_argument("--cases-dir", help="folder of case suites (default: the project's cases/)")
    checking.add_argument("--suite", action="append", help="only this suite of cases/ (repeatable)")
    checking.add_argument(
        "--case", help="check this one case, given as key=value pairs (as printed in a reproducer), and nothing else"
    )
    checking.add_argument("--random", type=int, default=20, metavar="N", help="random specs to add (default: 20)")
    checking.add_argument("--seed", type=int, default=0, help="seed of the random specs (default: 0)")
    checking.add_argument("--mode", choices=MODES, action="append", help="exact and/or float (default: both)")
    checking.add_argument("--dtype", choices=list(DTYPES), action="append", help="default: float32 and float64")
    checking.add_argument("--no-grad", action="store_true", help="skip the gradient checks")

    kernels = commands.add_parser(
        "kernels", help="build every implementation's GPU kernels for sm_80 and sm_90 and show their ptxas figures"
    )
    kernels.set_defaults(command=_kernels)
    kernels.add_argument("--output", type=Path, help="also write the table as markdown to this file")
    kernels.add_argument("--overwrite", action="store_true", help="replace --output if it exists")

    report = commands.add_parser(
        "report", help="markdown report with plots from saved benchmark JSON (pytest --benchmark-json=FILE)"
    )
    report.set_defaults(command=_report)
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN.json", help="benchmark runs; several machines merge")
    report.add_argument("--output", "-o", type=Path, required=True, help="markdown file; its PNG plots go beside it")
    report.add_argument("--baseline", nargs="+", type=Path, metavar="RUN.json", help="runs to compare against")
    report.add_argument("--title", help="the report's title")
    report.add_argument(
        "--noise-floor", type=float, default=1.0, metavar="RATIO",
        help="with --baseline: flag a change only beyond this ratio as well as beyond the IQRs (measure it with "
        "two runs of the same code; default 1: IQRs only)",
    )  # fmt: skip
    report.add_argument("--notes", type=Path, metavar="NOTES.md", help="markdown included after the summary (e.g. a profile)")
    report.add_argument("--overwrite", action="store_true", help="replace the report's files if they exist")
    return parser


def _report(args: argparse.Namespace, console: Console) -> int:
    from harness.report import ReportInputError, write_report  # pandas and matplotlib: only when reporting

    try:
        notes = args.notes.read_text() if args.notes else None
        written = write_report(
            args.runs, args.output, args.baseline, args.overwrite, args.title, notes, args.noise_floor
        )
    except (ValueError, FileExistsError, FileNotFoundError) as error:  # ReportInputError is a ValueError
        console.print(f"[red]cannot write the report:[/] {escape(str(error))}")
        return EXIT_USAGE
    for path in written:
        console.print(f"wrote {escape(str(path))}")
    return EXIT_OK


def _kernels(args: argparse.Namespace, console: Console) -> int:
    from harness.cudac import nvrtc_unavailable_reason
    from harness.cudac.report import kernel_table, kernel_table_markdown

    reason = nvrtc_unavailable_reason()
    if reason:
        console.print(f"[red]cannot build kernels:[/] {escape(reason)}")
        return EXIT_MISMATCH
    if args.output and args.output.exists() and not args.overwrite:
        console.print(f"[red]{args.output} exists[/]; pass --overwrite to replace it")
        return EXIT_MISMATCH
    found = discover(args.impls_dir)
    frame, errors = kernel_table(found.implementations.values())
    markdown = kernel_table_markdown(frame)
    if errors:
        markdown += "\n\nKernels that did not build:\n" + "\n".join(f"- {name}: {error}" for name, error in errors.items())
    console.print(markdown, markup=False, soft_wrap=True)
    if args.output:
        write_text_atomically(args.output, f"# CUDA kernels: ptxas figures (no GPU needed)\n\nMade by `swbench kernels` (`make kernels`).\n\n{markdown}\n")
    return EXIT_MISMATCH if errors or found.errors else EXIT_OK


def _list(args: argparse.Namespace, console: Console) -> int:
    found = discover(args.impls_dir)
    table = Table(title=f"Implementations in {found.folder}")
    for column in ("name", "computes", "dtypes", "autograd", "cpu", "cuda", "description"):
        table.add_column(column, overflow="fold")
    for name, impl in sorted(found.implementations.items()):
        status = []
        for device in ("cpu", "cuda"):
            reason = impl.unavailable_reason(device)
            status.append(
                f"[green]available[/] ({escape(impl.execution_mode(device))})"
                if reason is None
                else f"[yellow]no:[/] {escape(reason)}"
            )
        dtypes = ", ".join(str(d).removeprefix("torch.") for d in impl.dtypes)
        table.add_row(
            name, impl.computes.value, dtypes, "yes" if impl.autograd else "no", *status, escape(impl.description)
        )
    console.print(table)
    for file, error in sorted(found.errors.items()):
        console.print(f"[red]load error[/] {file}: {escape(error)}")
    return EXIT_MISMATCH if found.errors else EXIT_OK


def random_cases(count: int, seed: int) -> list[Case]:
    """``count`` random operator instances, sizes up to real layers' kernels (M <= 51)."""
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        small = int(rng.choice([1, 3, 5, 7]))
        big = 2 * int(rng.integers(small // 2, 26)) + 1
        cases.append(
            Case(
                name=f"random-{seed}-{index}",
                big_kernel=big,
                small_kernel=small,
                channels=int(rng.integers(1, 17)),
                groups=int(rng.integers(1, 9)),
                batch=int(rng.integers(1, 3)),
                height=int(rng.integers(1, 41)),
                width=int(rng.integers(1, 41)),
                tables=str(rng.choice(["random", "official"])),
                seed=int(rng.integers(0, 2**31)),
                sparsity=float(rng.choice([0.0, 0.3, 0.6, 1.0])),
                suite="random",
            )
        )
    return cases


def _check(args: argparse.Namespace, console: Console) -> int:
    found = discover(args.impls_dir)
    for file, error in sorted(found.errors.items()):
        console.print(f"[red]load error[/] {file}: {escape(error)}")
    selected = found.implementations
    if args.impl:
        unknown = sorted(set(args.impl) - set(selected))
        if unknown:
            console.print(f"[red]unknown implementation(s)[/] {escape(str(unknown))}; known: {escape(str(sorted(selected)))}")
            return EXIT_MISMATCH
        selected = {name: selected[name] for name in args.impl}

    try:
        cases = [] if args.case else load_cases(args.cases_dir, args.suite) + random_cases(args.random, args.seed)
        single = CheckCase.parse(args.case) if args.case else None
    except ValueError as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        return EXIT_USAGE
    if single is not None:
        checks = [single]
    else:
        checks = [
            CheckCase(case, dtype, mode, device=args.device)
            for case in cases
            for mode in args.mode or MODES
            for dtype in args.dtype or list(DTYPES)
        ]

    results: list[CheckResult] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("checking", total=len(selected) * len(checks))
        for name, impl in sorted(selected.items()):
            for check_case in checks:
                progress.update(task, description=f"{name}: {check_case.case.name} {check_case.mode} {check_case.dtype}")
                results.append(check(impl, check_case, gradients=not args.no_grad))
                progress.advance(task)

    console.print(_summary(results))
    for result in results:
        if result.failures:
            console.print(result.report(), markup=False, soft_wrap=True)
    failed = any(result.failures for result in results) or bool(found.errors)
    return EXIT_MISMATCH if failed else EXIT_OK


def _summary(results: list[CheckResult]) -> Table:
    table = Table(title="Equivalence with the float64 rep-merged reference")
    for column in ("implementation", "checks", "passed", "failed", "skipped", "skip reasons"):
        table.add_column(column, overflow="fold")
    for name in sorted({result.implementation for result in results}):
        mine = [result for result in results if result.implementation == name]
        reasons = Counter(result.skipped for result in mine if result.skipped)
        failed = sum(bool(result.failures) for result in mine)
        table.add_row(
            name,
            str(len(mine)),
            str(sum(result.passed for result in mine)),
            f"[red]{failed}[/]" if failed else "0",
            str(sum(reasons.values())),
            escape("; ".join(f"{reason} ({count})" for reason, count in reasons.items())),
        )
    return table


if __name__ == "__main__":
    sys.exit(main())
