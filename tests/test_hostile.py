"""The harness under hostile input: nothing lost, no false green, a crash or hang blamed on the
implementation that caused it (tests/bad_impls/ and tests/test_known_bad.py hold the cheats)."""

import dataclasses
import os
import shlex
import shutil
import stat
from pathlib import Path

import pytest

from harness.checking import runner
from harness.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOTHING_RAN, EXIT_USAGE, main
from harness.files import write_text_atomically

ROLL = (Path(__file__).parents[1] / "impls" / "torch_roll.py").read_text()
CASE = "name=tiny big_kernel=7 small_kernel=3 channels=2 groups=1 batch=1 height=5 width=5 mode=exact dtype=float32"


def _impl(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(
        "import os, signal, time\nimport torch\nfrom harness import reference_forward\n"
        "from harness.registry import Computes, Implementation\n"
        f"def forward(x, weight, spec):\n{body}\n"
        "    return tuple(b.to(x.dtype) for b in reference_forward(x, weight, spec))\n"
        f"IMPLEMENTATION = Implementation(name={name!r}, fn=forward, computes=Computes.OPERATOR,\n"
        "    devices=('cpu',), dtypes=(torch.float32, torch.float64))\n"
    )


def _rows(out: str) -> dict[str, list[str]]:
    return {cells[1].strip(): [c.strip() for c in cells[2:5]] for line in out.splitlines() if len(cells := line.split("│")) > 5}


def test_a_crash_fails_only_the_implementation_that_crashed_and_its_reproducer_reports(tmp_path, capsys):
    (tmp_path / "roll.py").write_text(ROLL)
    _impl(tmp_path, "segfaults", "    os.kill(os.getpid(), signal.SIGSEGV)")
    _impl(tmp_path, "exits_zero", "    os._exit(0)")
    assert main(["--impls-dir", str(tmp_path), "check", "--case", CASE]) == EXIT_FAILED
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["torch_roll"] == ["1", "1", "0"]
    assert rows["segfaults"] == ["1", "0", "1"] and rows["exits_zero"] == ["1", "0", "1"]
    assert "[crash] the worker process died while checking this" in out
    reproducer = next(line.strip() for line in out.splitlines() if "--impl segfaults" in line)
    assert reproducer.startswith(f"swbench --impls-dir {shlex.quote(str(tmp_path))} check")
    assert main(shlex.split(reproducer)[1:]) == EXIT_FAILED  # run as printed: reports, does not die
    assert "[crash]" in capsys.readouterr().out


def test_a_hang_runs_into_the_time_limit(tmp_path, capsys):
    _impl(tmp_path, "hangs", "    time.sleep(3600)")
    assert main(["--impls-dir", str(tmp_path), "check", "--case", CASE, "--timeout", "2"]) == EXIT_FAILED
    assert "[timeout] the check ran past its time limit of 2 s (--timeout)" in capsys.readouterr().out


def test_an_implementation_wrong_only_for_strided_inputs_fails_the_quick_tier(tmp_path, capsys):
    _impl(tmp_path, "contiguous_only", "    if not x.is_contiguous():\n        return tuple(torch.zeros_like(x) for _ in 'hvi')")
    args = ["--impls-dir", str(tmp_path), "check", "--suite", "edge", "--random", "0", "--mode", "exact", "--dtype", "float32", "--jobs", "1", "--no-grad"]
    assert main(args) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "layout=strided" in out and "layout=channels_last" not in out.split("does not match")[1].splitlines()[1]


def test_every_tier_checks_strided_and_channels_last_inputs():
    for tier in runner.TIERS:
        plan = runner.plan(tier, device="cpu", modes=["exact", "float"], dtypes=["float32"], random=1)
        assert {c.layout for c in plan.checks} == {"contiguous", "strided", "channels_last"}


def test_a_cases_dir_is_honoured_or_refused(tmp_path):
    (tmp_path / "mine.toml").write_text("[[case]]\nname='a'\nbig_kernel=7\nsmall_kernel=3\nchannels=2\ngroups=1\nbatch=1\nheight=5\nwidth=5\n")
    plan = runner.plan("quick", device="cpu", modes=["exact"], dtypes=["float32"], cases_dir=tmp_path, random=0)
    assert {c.case.name for c in plan.checks} == {"a"}
    (tmp_path / "mine.toml").write_text('checks = "full"\n' + (tmp_path / "mine.toml").read_text())  # what its TOML says it is for
    with pytest.raises(ValueError, match="the quick tier checks none of the cases in"):
        runner.plan("quick", device="cpu", modes=["exact"], dtypes=["float32"], cases_dir=tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--case", ""], "--case: case string: missing keys"),
        (["check", "--timeout", "0"], "expected a number of seconds > 0"),
        (["report", "run.json", "--output", "r.md", "--noise-floor", "-1"], "--noise-floor: expected a ratio >= 1"),
        (["report", "run.json", "--output", "r.md", "--noise-floor", "nan"], "--noise-floor: expected a ratio >= 1"),
    ],
)
def test_more_usage_errors(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    assert code == EXIT_USAGE and message in captured.out + captured.err


def test_an_empty_implementations_folder_is_nothing_found(tmp_path, capsys):
    assert main(["--impls-dir", str(tmp_path), "list"]) == EXIT_NOTHING_RAN
    assert main(["--impls-dir", str(tmp_path), "check", "--case", CASE]) == EXIT_NOTHING_RAN
    assert "no implementations in" in capsys.readouterr().out


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", interrupted)
    assert main(["check", "--case", CASE, "--impl", "torch_roll"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("swbench: interrupted (Ctrl-C)")


def test_files_get_the_umask_permissions_and_are_never_replaced_without_overwrite(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomically(tmp_path / "a.md", "first")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.md").stat().st_mode) == 0o640
    with pytest.raises(FileExistsError, match="exists"):
        write_text_atomically(tmp_path / "a.md", "second", overwrite=False)
    assert (tmp_path / "a.md").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"]  # no temporary file left behind


def test_a_report_never_replaces_its_input(tmp_path, capsys):
    run = tmp_path / "run.json"
    run.write_text((Path(__file__).parent / "data" / "official.json").read_text())
    before = run.read_bytes()
    assert main(["report", str(run), "--output", str(run), "--overwrite"]) == EXIT_USAGE
    assert "is the input" in capsys.readouterr().out and run.read_bytes() == before
    assert main(["report", str(run), "--output", str(tmp_path), "--overwrite"]) == EXIT_USAGE  # a folder
    assert "expected the path of the markdown file to write, got the folder" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"] and run.read_bytes() == before


BAD_IMPLS = Path(__file__).parent / "bad_impls"
#: cheat -> what the benchmark's verification of its timed calls says
TIMED_CHEATS = {
    "cheat_replays_by_pointer": "is the memory of an earlier call's output",
    "cheat_caches_by_pointer": "on the same input buffers refilled with -x, is wrong",
    "cheat_works_once": "is wrong",
    "cheat_patches_timer": "time.perf_counter was replaced by function _slow_clock",
}


@pytest.mark.parametrize("name", sorted(TIMED_CHEATS))
def test_the_benchmark_verifies_what_it_timed(name, tmp_path):
    """Session.measure's check after timing (``integrity.check_timed_calls``), on the calls a
    benchmark makes: one verified, then timed ones on the same buffers. The cheat is loaded
    from a fresh copy, so its import-time effects (a patched clock) happen in this test even
    when an earlier test in the same worker imported, caught and undid them."""
    from harness import discover
    from harness.bench import Computation
    from harness.cases import Case
    from harness.checking import integrity

    shutil.copy(BAD_IMPLS / f"{name}.py", tmp_path / f"{name}.py")
    impl = discover(tmp_path).implementations[name]
    prepared = Computation(name, impl.role, "", implementation=impl).prepare(Case("t", 7, 3, 2, 1, 1, 6, 6), __import__("torch").float32, "cpu")
    first = prepared.run()
    prepared.verify(first)
    for _ in range(4):
        last = prepared.run()
    with pytest.raises(integrity.TimedCallsCheat, match=TIMED_CHEATS[name]):
        integrity.check_timed_calls(prepared.run, prepared.verify, first, last, prepared.inputs, impl.source)


def test_an_honest_implementation_passes_the_timed_calls_check():
    from harness import discover
    from harness.bench import Computation
    from harness.cases import Case
    from harness.checking import integrity

    impl = discover().implementations["torch_roll"]
    prepared = Computation("torch_roll", impl.role, "", implementation=impl).prepare(Case("t", 7, 3, 2, 1, 1, 6, 6), __import__("torch").float32, "cpu")
    x = prepared.inputs[0].clone()
    first, last = prepared.run(), prepared.run()
    integrity.check_timed_calls(prepared.run, prepared.verify, first, last, prepared.inputs)
    assert torch_equal(prepared.inputs[0], x)  # x is put back after the probe


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def _bench(tmp_path, impls: Path, output: Path, select: str, *options: str):
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(root / "tests" / "test_benchmarks.py"),
        "--benchmark-only", "--suite", "sweep_small_kernel", "-k", select, "--benchmark-max-time=0.01",
        "--benchmark-min-rounds=2", "--peak-gflops=50", "--peak-gbps=10", f"--benchmark-json={output}", *options,
    ]  # fmt: skip
    env = {**os.environ, "SW_IMPLS_DIR": str(impls)}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def test_an_interrupted_benchmark_run_never_replaces_an_earlier_file(tmp_path):
    import json

    impls = tmp_path / "impls"
    impls.mkdir()
    (impls / "roll.py").write_text(ROLL)
    _impl(impls, "zz_interrupts", "    raise KeyboardInterrupt")  # as Ctrl-C during its benchmark
    output = tmp_path / "run.json"
    output.write_text("an earlier run")
    done = _bench(tmp_path, impls, output, "k3 and (torch_roll-cpu or zz_interrupts-cpu) and not compiled")
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout[-2000:] + done.stderr[-2000:]
    assert output.read_text() == "an earlier run"
    partial = json.loads((tmp_path / "run.interrupted.json").read_text())
    assert partial["sw"]["interrupted"] is True
    assert [b["extra_info"]["computation"] for b in partial["benchmarks"]] == ["torch_roll"]
    from harness.report import render_report

    assert "**no: interrupted**" in render_report([tmp_path / "run.interrupted.json"]).markdown


def test_an_item_that_hangs_when_timed_is_stopped_recorded_and_the_run_goes_on(tmp_path):
    """bad_hangs_when_timed passes the verification of its first call, then hangs in
    pytest-benchmark's timed calls: the item's time limit (20 s: torch_roll's item must fit in it on a loaded box) stops it, its failure (with a
    reproducer that, run as printed, fails the same way) is in the JSON, and the other
    implementation is still timed."""
    import json
    import subprocess
    import sys

    from tests.test_known_bad import CAUGHT_BY_THE_BENCHMARK

    impls = tmp_path / "impls"
    impls.mkdir()
    (impls / "roll.py").write_text(ROLL)
    shutil.copy(BAD_IMPLS / "hangs_when_timed.py", impls)
    output = tmp_path / "run.json"
    select = "k3 and (torch_roll-cpu or bad_hangs_when_timed-cpu) and not compiled"
    done = _bench(tmp_path, impls, output, select, "--bench-timeout=20")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout[-2000:] + done.stderr[-2000:]
    run = json.loads(output.read_text())
    timed = {b["extra_info"]["computation"] for b in run["benchmarks"]}
    assert "torch_roll" in timed and "bad_hangs_when_timed" not in timed
    (failure,) = run["sw"]["failures"]
    assert failure["computation"] == "bad_hangs_when_timed"
    assert CAUGHT_BY_THE_BENCHMARK["bad_hangs_when_timed"] in failure["error"] and "of 20 s" in failure["error"]
    words = shlex.split(failure["reproducer"])
    env = dict(os.environ) | dict(w.split("=", 1) for w in words if w.startswith("SW_IMPLS_DIR="))
    command = [sys.executable, "-m", *[w for w in words if not w.startswith("SW_IMPLS_DIR=")]]
    assert env["SW_IMPLS_DIR"] == str(impls) and "--bench-timeout 20" in failure["reproducer"]
    from harness.report import render_report

    assert f"`{failure['reproducer']}`" in render_report([output]).markdown.split("## Failures")[1]
    again = subprocess.run([*command, "-p", "no:cacheprovider", "--benchmark-max-time=0.01"], cwd=Path(__file__).parents[1],
                           env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == pytest.ExitCode.TESTS_FAILED and "ran past its time limit of 20 s" in again.stdout, again.stdout[-2000:]


def test_an_implementation_file_that_fails_to_load_is_in_the_runs_json_report_and_output(tmp_path):
    import json

    from harness.report import render_report

    impls = tmp_path / "impls"
    impls.mkdir()
    (impls / "roll.py").write_text(ROLL)
    (impls / "broken.py").write_text("this is not python\n")
    output = tmp_path / "run.json"
    done = _bench(tmp_path, impls, output, "k3 and torch_roll-cpu")
    assert done.returncode == pytest.ExitCode.OK, done.stdout[-2000:] + done.stderr[-2000:]
    assert "implementation file did not load: broken.py: NameError" in done.stderr
    errors = json.loads(output.read_text())["sw"]["load_errors"]
    assert list(errors) == ["broken.py"] and "NameError" in errors["broken.py"]
    section = render_report([output]).markdown.split("## Implementation files that did not load")[1]
    assert section.lstrip().startswith("- `broken.py`: NameError")


def test_a_benchmark_run_that_times_nothing_is_not_a_pass(tmp_path):
    impls = tmp_path / "impls"
    impls.mkdir()
    (impls / "roll.py").write_text(ROLL)
    output = tmp_path / "run.json"
    done = _bench(tmp_path, impls, output, "torch_roll-cuda")  # skipped here (no GPU) or timed (GPU)
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA device: the selected benchmark is timed there")
    assert done.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nothing was benchmarked" in done.stderr and not output.exists()


def test_a_bogus_impl_or_channel_count_is_a_clear_error_at_once():
    import torch

    from harness.models.layers import ShiftwiseConv2d
    from harness.models.networks import build_network

    with pytest.raises(ValueError, match="unknown SW implementation 'bogus'"):
        build_network("sw_tiny", impl="bogus", depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    layer = ShiftwiseConv2d(8, 8, 13, impl="reference")
    with pytest.raises(ValueError, match=r"x must be \(B, 8, H, W\), got shape \(1, 5, 6, 6\)"):
        layer(torch.zeros(1, 5, 6, 6))


def test_a_case_too_large_for_memory_is_refused_before_anything_is_allocated(tmp_path, capsys, monkeypatch):
    huge = "name=huge big_kernel=51 small_kernel=3 channels=4000 groups=4 height=2000 width=2000 batch=64"
    assert main(["check", "--case", huge, "--impl", "torch_roll"]) == EXIT_USAGE
    captured = capsys.readouterr()
    line = (captured.out + captured.err).strip().splitlines()[-1]
    assert "--case: case 'huge' needs at least" in line and "GiB this machine has available" in line
    # A suite's case that cannot fit is refused per check, never blamed on the implementation.
    from harness.checking.inputs import CheckCase

    result = runner._run_task(runner._Task(("torch_roll",), None, (CheckCase.parse(huge),), (False,), 60.0))[0]
    assert [f.kind for f in result.failures] == ["refused"] and "was not checked (the harness refused" in result.report()


def test_a_case_name_with_spaces_gives_a_reproducer_that_parses():
    from harness.checking.inputs import CheckCase

    case = CheckCase.parse(CASE.replace("name=", "name=x", 1))
    spaced = CheckCase(dataclasses.replace(case.case, name="my case; rm -rf"), layout="strided")
    assert CheckCase.parse(spaced.to_args()) == spaced
    assert shlex.split(f"--case {shlex.quote(spaced.to_args())}")[1] == spaced.to_args()


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (["--benchmark-only", "--suite", "nosuch"], {}, "--suite: unknown suites ['nosuch']"),
        (["--benchmark-only", "--peak-gflops=-1"], {}, "argument --peak-gflops: expected a number > 0, got -1"),
        (["--benchmark-only", "--bench-timeout=0"], {}, "argument --bench-timeout: expected a number > 0, got 0"),
        (["--hypothesis-profile", "nosuch"], {}, "--hypothesis-profile: expected a Hypothesis profile"),
        ([], {"SW_HYPOTHESIS_PROFILE": "nosuch"}, "SW_HYPOTHESIS_PROFILE: expected a Hypothesis profile"),
    ],
)
def test_bad_pytest_options_are_one_line_usage_errors_before_any_work(options, env, message):
    """pytest's usage error (exit 4, the message on one line, no traceback) before collection."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(root / "tests" / "test_spec.py"), *options]
    done = subprocess.run(command, cwd=root, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:] + done.stderr[-2000:]
    assert any(message in line for line in done.stderr.splitlines()), done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "collected" not in done.stdout, done.stderr
