"""``swbench``: list the implementations, check them against the reference, build reports."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import torch

from harness.checking import DTYPES, MODES, CheckCase, CheckResult, runner
from harness.files import same_file, write_text_atomically
from harness.registry import ENTRY_POINT_GROUP, discover

#: Exit codes, one rule for every command: 0 only if something ran (at least one check, one
#: kernel, one listed implementation) and nothing failed; 1 a failure (a mismatch, a kernel that
#: did not build, a file in impls/ that did not load: the last line says which); 2 a usage error
#: (a one-line message naming the argument); 3 nothing ran (every check skipped, e.g. no GPU; no
#: implementation found); 130 interrupted (Ctrl-C). ``outcome`` is the rule.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOTHING_RAN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_MISMATCH = EXIT_FAILED  # the older name


class UsageError(Exception):
    """A bad command-line input; the message names the argument and what was expected."""


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line (no usage block), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio >= 1 (1.05: 5%), got {text!r}") from None
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a ratio >= 1 (1.05: 5%), got {text}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a whole number >= 1, got 0")
    return value


def outcome(ran: int, failed: int) -> int:
    """The one rule for every command's exit code: a failure is 1, else nothing done is 3, else 0."""
    if failed:
        return EXIT_FAILED
    return EXIT_OK if ran else EXIT_NOTHING_RAN


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Not a terminal (CI logs, pipes): wide enough that tables and reproducers stay on one line.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    try:
        return args.command(args, console)
    except UsageError as error:
        console.print(f"swbench: error: {escape(str(error))}", soft_wrap=True)
        return EXIT_USAGE
    except FileNotFoundError as error:  # e.g. --impls-dir / $SW_IMPLS_DIR naming no folder
        console.print(f"swbench: error: {escape(str(error))}", soft_wrap=True)
        return EXIT_USAGE
    except FileExistsError as error:  # another run wrote the output meanwhile
        console.print(f"swbench: error: {escape(str(error))}", soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        console.print(f"swbench: interrupted (Ctrl-C): nothing was written; exit {EXIT_INTERRUPTED}")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="swbench", description=__doc__, epilog="Exit codes: 0 passed, 1 failed, 2 usage error, 3 nothing ran.")
    parser.add_argument(
        "--impls-dir", help="folder of implementation files (default: $SW_IMPLS_DIR, else the project's impls/)"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND", parser_class=_Parser)

    listing = commands.add_parser("list", help="implementations, devices, availability, load errors")
    listing.set_defaults(command=_list)

    checking = commands.add_parser("check", help="equivalence of implementations with the reference")
    checking.set_defaults(command=_check)
    checking.add_argument("--impl", action="append", help="only this implementation (repeatable)")
    checking.add_argument("--device", default="cpu", help="torch device to check on (default: cpu)")
    checking.add_argument(
        "--tier", choices=runner.TIERS, default="quick",
        help="quick (default, minutes): edge cases, one case per real-network layer at batch 1, 4 random specs, "
        "gradients on small inputs; full: every case, 20 random specs, every gradient",
    )  # fmt: skip
    checking.add_argument("--cases-dir", help="folder of case suites (default: the project's cases/)")
    checking.add_argument("--suite", action="append", help="only this suite of cases/ (repeatable)")
    checking.add_argument(
        "--case", help="check this one case, given as key=value pairs (as printed in a reproducer), and nothing else"
    )
    checking.add_argument("--random", type=_count, metavar="N", help="random specs to add (default: 4 quick, 20 full)")
    checking.add_argument("--jobs", "-j", type=_positive, metavar="N", help="worker processes (default: one per core; 1: this process)")
    checking.add_argument("--seed", type=_count, default=0, help="seed of the random specs (default: 0)")
    checking.add_argument("--mode", choices=MODES, action="append", help="exact and/or float (default: both)")
    checking.add_argument("--dtype", choices=list(DTYPES), action="append", help="default: float32 and float64")
    checking.add_argument("--no-grad", action="store_true", help="skip the gradient checks")
    checking.add_argument(
        "--timeout", type=_seconds, default=runner.CHECK_TIMEOUT, metavar="SECONDS",
        help=f"time limit of one check, after which it fails as hung (default: {runner.CHECK_TIMEOUT:g})",
    )  # fmt: skip

    kernels = commands.add_parser(
        "kernels", help="build every implementation's GPU kernels for sm_80 and sm_90 and show their ptxas figures"
    )
    kernels.set_defaults(command=_kernels)
    kernels.add_argument("--output", type=Path, help="also write the table as markdown to this file")
    kernels.add_argument("--json", type=Path, metavar="KERNELS.json",
                         help="also write the figures as JSON, for `swbench report --kernels` (fails if the file exists; --overwrite)")
    kernels.add_argument("--overwrite", action="store_true", help="replace --output if it exists")

    _add_gpu_day(commands)
    _add_cluster(commands)

    report = commands.add_parser(
        "report", help="markdown report with plots from saved benchmark JSON (pytest --benchmark-json=FILE)"
    )
    report.set_defaults(command=_report)
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN.json", help="benchmark runs; several machines merge")
    report.add_argument("--output", "-o", type=Path, required=True, help="markdown file; its PNG plots go beside it")
    report.add_argument("--baseline", nargs="+", type=Path, metavar="RUN.json", help="runs to compare against")
    report.add_argument("--title", help="the report's title")
    report.add_argument(
        "--noise-floor", type=_ratio, default=1.0, metavar="RATIO",
        help="with --baseline: flag a change only beyond this ratio as well as beyond the IQRs (measure it with "
        "two runs of the same code; default 1: IQRs only)",
    )  # fmt: skip
    report.add_argument("--notes", type=Path, metavar="NOTES.md", help="markdown included after the summary (e.g. a profile)")
    report.add_argument("--kernels", type=Path, metavar="KERNELS.json", help="the GPU kernels' figures (`swbench kernels --json`) to list")
    report.add_argument("--overwrite", action="store_true", help="replace the report's files if they exist")
    return parser


def _add_gpu_day(commands) -> None:
    from harness.gpuday.day import PHASE_NAMES

    gpu = commands.add_parser("gpu", help="the GPU day: every GPU phase in one timed run (make gpu); --dry-run on the CPU")
    gpu.set_defaults(command=_gpu_day)
    gpu.add_argument("--output", type=Path, help="one new or empty folder for everything (default: $OUT, else reports/gpu-day/TIME)")
    gpu.add_argument("--dry-run", action="store_true", help="every phase on the CPU: host builds, Numba's simulator, tiny shapes")
    gpu.add_argument("--phase", action="append", choices=PHASE_NAMES, help="only this phase (repeatable; default: all, in order)")


def _add_cluster(commands) -> None:
    from harness.cases import TIERS
    from harness.cluster import DEFAULT_TIMEOUT_MIN

    cluster = commands.add_parser(
        "cluster", help="the benchmark matrix on machines through submitit (Slurm, or its local executor): one job per "
        "target, one report across them",
    )  # fmt: skip
    cluster.set_defaults(command=_cluster)
    cluster.add_argument("--executor", choices=("local", "slurm"), default="local",
                         help="submitit's local executor (this workstation; default) or Slurm")  # fmt: skip
    cluster.add_argument(
        "--target", action="append", metavar="NAME[:KEY=VALUE,...]",
        help="one job per target (repeatable; default: one named after the executor). Keys: partition, gres, constraint, "
        "account, qos, time (minutes), cpus, gpus, mem (GB), device (all, cpu or cuda: pytest's --bench-device), or any "
        "submitit parameter (slurm_...); e.g. h100:partition=gpu,gres=gpu:h100:1,device=cuda",
    )  # fmt: skip
    cluster.add_argument("--tier", choices=TIERS, default="quick", help="benchmark tier (default: quick, as make bench)")
    cluster.add_argument("--suite", action="append", help="only this suite of cases/ (repeatable; default: every suite)")
    cluster.add_argument("--impl", action="append", help="only this implementation or peer (repeatable; default: every one)")
    cluster.add_argument("--case", action="append", help="only this case of the chosen suites (repeatable)")
    for flag, what in (("partition", "Slurm partition"), ("gres", "Slurm gres (e.g. gpu:1)"),
                       ("constraint", "Slurm constraint"), ("account", "Slurm account")):  # fmt: skip
        cluster.add_argument(f"--{flag}", help=f"{what} of every job (a target's own key wins)")
    cluster.add_argument("--time-min", type=_positive, metavar="MINUTES",
                         help=f"each job's time limit (submitit timeout_min; default {DEFAULT_TIMEOUT_MIN})")  # fmt: skip
    cluster.add_argument("--cpus-per-task", type=_positive, metavar="N", help="CPUs of each job")
    cluster.add_argument("--executor-param", action="append", metavar="KEY=VALUE",
                         help="any other submitit parameter of every job, e.g. slurm_qos=high (repeatable)")  # fmt: skip
    cluster.add_argument(
        "--bench-args", metavar="ARGS",
        help="pytest options of each run, as one string (write --bench-args='...'; default: make bench's "
        "--benchmark-max-time=0.5 --benchmark-min-rounds=3)",
    )  # fmt: skip
    cluster.add_argument("--parallel", type=_positive, metavar="N",
                         help="jobs at once (default: 1 with the local executor, whose jobs share this machine; all on Slurm)")  # fmt: skip
    cluster.add_argument("--poll", type=_seconds, default=5.0, metavar="SECONDS", help="seconds between polls of the jobs (default 5)")
    cluster.add_argument("--output", type=Path, help="one new or empty folder for the run (default: reports/cluster/TIER-TIME)")


def _cluster(args: argparse.Namespace, console: Console) -> int:
    import shlex as _shlex

    from harness import cluster

    try:
        targets = [cluster.Target.parse(text) for text in args.target or [args.executor]]
    except ValueError as error:
        raise UsageError(f"--target: {error}") from None
    try:
        bench_args = None if args.bench_args is None else _shlex.split(args.bench_args)
    except ValueError as error:
        raise UsageError(f"--bench-args: {error}") from None
    try:
        matrix = cluster.plan(args.tier, args.suite, args.impl, args.case, bench_args, args.impls_dir)
    except ValueError as error:
        raise UsageError(str(error)) from None
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise UsageError(f"--target: target names must be unique, got {names}")
    common = {"slurm_partition": args.partition, "slurm_gres": args.gres, "slurm_constraint": args.constraint,
              "slurm_account": args.account, "timeout_min": args.time_min, "cpus_per_task": args.cpus_per_task}  # fmt: skip
    for item in args.executor_param or ():
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UsageError(f"--executor-param: expected KEY=VALUE, got {item!r}")
        common[key] = cluster.parse_value(value)
    common = {key: value for key, value in common.items() if value is not None}
    targets = [dataclasses.replace(t, parameters={**common, **t.parameters}) for t in targets]
    try:
        folder = cluster.new_folder(args.output or cluster.default_output(args.tier))
    except FileExistsError as error:
        raise UsageError(str(error)) from None
    run = cluster.ClusterRun(
        folder, args.executor, matrix, targets, impls_dir=args.impls_dir, parallel=args.parallel,
        poll_seconds=args.poll, command=_shlex.join(["swbench", *sys.argv[1:]]),
        echo=lambda line: console.print(escape(line), soft_wrap=True),
    )  # fmt: skip
    console.print(f"cluster run into {escape(str(folder))}: {len(targets)} job(s) on the {args.executor} executor")
    try:
        return run.run()
    except KeyboardInterrupt:
        console.print(f"swbench: interrupted (Ctrl-C): unfinished jobs cancelled, listed in {escape(str(folder / cluster.RECORD))}; exit {EXIT_INTERRUPTED}")
        return EXIT_INTERRUPTED


def _gpu_day(args: argparse.Namespace, console: Console) -> int:
    from harness.gpuday import run_day
    from harness.gpuday.day import default_output

    try:
        return run_day(args.output or default_output(), dry_run=args.dry_run, phases=args.phase,
                       echo=lambda line: console.print(escape(line), soft_wrap=True))  # fmt: skip
    except (FileExistsError, ValueError) as error:
        raise UsageError(str(error)) from None


def _report(args: argparse.Namespace, console: Console) -> int:
    from harness.report import ReportInputError, write_report  # pandas and matplotlib: only when reporting

    if args.notes and same_file(args.output, args.notes):
        raise UsageError(f"--output: {args.output} is the --notes file; write the report to another file")
    try:
        notes = args.notes.read_text() if args.notes else None
        written = write_report(
            args.runs, args.output, args.baseline, args.overwrite, args.title, notes, args.noise_floor, args.kernels
        )
    except (ValueError, OSError) as error:  # ReportInputError is a ValueError; FileExistsError, FileNotFoundError, ...
        console.print(f"[red]cannot write the report:[/] {escape(str(error))}")
        return EXIT_USAGE
    for path in written:
        console.print(f"wrote {escape(str(path))}")
    return EXIT_OK


def _kernels(args: argparse.Namespace, console: Console) -> int:
    from harness.cudac import nvrtc_unavailable_reason
    from harness.cudac.kernel_table import kernel_table, kernel_table_markdown

    reason = nvrtc_unavailable_reason()
    if reason:
        console.print(f"[red]cannot build kernels:[/] {escape(reason)}")
        return EXIT_FAILED
    for target in (args.output, args.json):
        if target and target.exists() and not args.overwrite:
            console.print(f"[red]{target} exists[/]; pass --overwrite to replace it")
            return EXIT_USAGE
    found = discover(args.impls_dir)
    frame, errors = kernel_table(found.implementations.values())
    markdown = kernel_table_markdown(frame)
    if errors:
        markdown += "\n\nKernels that did not build:\n" + "\n".join(f"- {name}: {error}" for name, error in errors.items())
    console.print(markdown, markup=False, soft_wrap=True)
    if args.output:
        write_text_atomically(args.output, overwrite=args.overwrite, text=f"# CUDA kernels: ptxas, SASS, occupancy and lower-bound estimates (no GPU needed)\n\nMade by `swbench kernels` (`make kernels`).\n\n{markdown}\n")
    if args.json:
        from harness.report.load import kernels_json

        write_text_atomically(args.json, kernels_json(frame, errors), overwrite=args.overwrite)
    return outcome(len(frame), len(errors) + len(found.errors))


def _list(args: argparse.Namespace, console: Console) -> int:
    found = discover(args.impls_dir)
    table = Table(title=f"Implementations in {found.folder} and from installed plug-ins (entry points {ENTRY_POINT_GROUP})")
    for column in ("name", "from", "computes", "dtypes", "autograd", "cpu", "cuda", "description"):
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
            name, escape(impl.origin), impl.computes.value, dtypes, "yes" if impl.autograd else "no", *status,
            escape(impl.description),
        )  # fmt: skip
    console.print(table)
    for file, error in sorted(found.errors.items()):
        console.print(f"[red]load error[/] {file}: {escape(error)}")
    if not found.implementations:
        console.print(f"[yellow]no implementations[/] in {escape(str(found.folder))}; exit {outcome(0, len(found.errors))}")
    return outcome(len(found.implementations), len(found.errors))


def _check(args: argparse.Namespace, console: Console) -> int:
    found = discover(args.impls_dir)
    selected = found.implementations
    if args.impl:
        unknown = sorted(set(args.impl) - set(selected))
        if unknown:
            raise UsageError(f"--impl: unknown implementation(s) {unknown}; known: {sorted(selected)}")
        selected = {name: selected[name] for name in dict.fromkeys(args.impl)}
    device = _device_argument(args.device)
    if args.case is not None:
        if args.tier != "quick" or args.suite or args.random is not None or args.cases_dir:
            raise UsageError("--case checks exactly one case: it cannot be combined with --tier, --suite, --random or --cases-dir")
        try:
            single = CheckCase.parse(args.case)
            single.ensure_fits()
        except ValueError as error:
            raise UsageError(f"--case: {error}") from None
        checks = runner.Plan((single,), (not args.no_grad,))
    else:
        try:
            checks = runner.plan(
                args.tier, device=device, modes=args.mode or MODES, dtypes=args.dtype or list(DTYPES),
                cases_dir=args.cases_dir, suites=args.suite, random=args.random, seed=args.seed,
                gradients=not args.no_grad,
            )  # fmt: skip
        except ValueError as error:
            raise UsageError(str(error)) from None
    for file, error in found.errors.items():
        console.print(f"[red]load error[/] {file}: {escape(error)}")

    total = len(selected) * len(checks.checks)
    folder = str(found.folder) if args.impls_dir else None
    started = time.monotonic()
    if console.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("checking", total=total)
            results = runner.run(
                list(selected), checks, impls_dir=folder, jobs=args.jobs, timeout=args.timeout,
                progress=lambda what, n: bar.update(task, advance=n, description=escape(what)),
            )  # fmt: skip
    else:  # a log: one line per finished task, so a long run shows it is alive
        done = 0

        def line(what: str, n: int) -> None:
            nonlocal done
            done += n
            console.print(f"[{done}/{total}] {escape(what)} ({time.monotonic() - started:.0f} s)")

        results = runner.run(list(selected), checks, impls_dir=folder, jobs=args.jobs, timeout=args.timeout, progress=line)

    console.print(_summary(results))
    for result in results:
        if result.failures:
            console.print(result.report(), markup=False, soft_wrap=True)
    failed = sum(bool(result.failures) for result in results)
    ran = sum(result.skipped is None for result in results)
    elapsed = f"{time.monotonic() - started:.0f} s"
    if failed:
        console.print(f"[red]FAILED[/]: {failed} of {ran} checks failed ({elapsed}); exit {EXIT_FAILED}")
        return EXIT_FAILED
    if found.errors:
        console.print(
            f"[red]FAILED[/]: every check that ran passed ({ran}, {elapsed}), but {len(found.errors)} file(s) in "
            f"{escape(str(found.folder))} or plug-in(s) did not load ({escape('; '.join(found.errors))}); exit {EXIT_FAILED}"
        )
        return EXIT_FAILED
    if ran == 0:
        why = "reasons above" if results else f"no implementations in {escape(str(found.folder))}"
        console.print(f"[yellow]NOTHING RAN[/]: all {len(results)} checks were skipped ({why}); exit {EXIT_NOTHING_RAN}")
        return EXIT_NOTHING_RAN
    console.print(f"[green]PASSED[/]: {ran} checks ({elapsed}); exit {EXIT_OK}")
    return EXIT_OK


def _device_argument(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device: expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device: expected cpu or cuda (the devices implementations declare), got {text!r}")
    return text


def _summary(results: list[CheckResult]) -> Table:
    table = Table(title="Equivalence with the float64 rep-merged reference")
    for column in ("implementation", "checks", "passed", "failed", "skipped", "skip reasons"):
        table.add_column(column, overflow="fold")
    for name in dict.fromkeys(result.implementation for result in results):
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
