"""The harness under hostile input: nothing lost, no false green, a crash or hang blamed on the
implementation that caused it (tests/bad_impls/ and tests/test_known_bad.py hold the cheats)."""

import os
import shlex
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
    (tmp_path / "mine.toml").rename(tmp_path / "sweep_mine.toml")
    with pytest.raises(ValueError, match="the quick tier checks none of the cases in"):
        runner.plan("quick", device="cpu", modes=["exact"], dtypes=["float32"], cases_dir=tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--case", ""], "--case: case string: missing keys"),
        (["check", "--timeout", "0"], "expected a number of seconds > 0"),
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
