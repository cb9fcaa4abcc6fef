"""The ``swbench`` command through its entry point: output, exit codes, one-line usage errors."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cases import load_cases
from harness.checking import runner
from harness.cli import EXIT_FAILED, EXIT_NOTHING_RAN, EXIT_OK, EXIT_USAGE, main

BAD_IMPLS = str(Path(__file__).parent / "bad_impls")


def test_list_shows_torch_roll_available_on_cpu(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "torch_roll" in line)
    assert "available" in line and "shift_add" in line


def test_list_reports_load_errors_and_fails(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    assert main(["--impls-dir", str(tmp_path), "list"]) == 1
    assert "load error broken.py: ModuleNotFoundError" in capsys.readouterr().out


def test_check_passes_on_edge_cases_and_random_specs(capsys):
    assert main(["check", "--impl", "torch_roll", "--suite", "edge", "--random", "3", "--seed", "1", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "torch_roll" in line)
    # the cases and 3 random specs, 2 modes x 2 dtypes contiguous, and strided and channels_last in exact float32
    checks = (len(load_cases(suites=["edge"])) + 3) * (2 * 2 + 2)
    assert [cell.strip() for cell in row.split("│")[1:5]] == ["torch_roll", str(checks), str(checks), "0"]
    assert out.strip().splitlines()[-1].startswith(f"PASSED: {checks} checks")


def test_check_runs_in_worker_processes(capsys):
    args = ["check", "--impl", "torch_roll", "--impl", "cuda_atomic", "--suite", "edge", "--random", "0", "--jobs", "2"]
    assert main([*args, "--mode", "exact", "--dtype", "float32"]) == EXIT_OK
    out = capsys.readouterr().out
    edge = 3 * len(load_cases(suites=["edge"]))  # three layouts
    for name in ("torch_roll", "cuda_atomic"):
        row = next(line for line in out.splitlines() if f"│ {name} " in line)
        assert [cell.strip() for cell in row.split("│")[2:5]] == [str(edge), str(edge), "0"]


def test_quick_tier_checks_edges_one_case_per_layer_and_random_specs():
    cases = load_cases()
    quick = runner.tier_cases("quick", cases)
    layer_suites = {name for name, checks in runner.suite_checks().items() if checks == "layers"}
    assert layer_suites == {"sw_tiny", "sw_small"}  # what their TOML says they are for
    assert {c.name for c in quick if c.suite == "edge"} == {c.name for c in cases if c.suite == "edge"}
    layers = [c for c in quick if c.suite in layer_suites]
    shapes = [(c.suite, c.big_kernel, c.channels, c.height, c.width) for c in layers]
    assert len(shapes) == len(set(shapes)) and all(c.batch == 1 for c in layers)
    assert set(shapes) == {(c.suite, c.big_kernel, c.channels, c.height, c.width) for c in cases if c.suite in layer_suites}
    assert not any(c.suite.startswith("sweep_") for c in quick)
    benchmarked_only = {name for name, checks in runner.suite_checks().items() if checks == "none"}
    assert "training_layers" in benchmarked_only  # its gradients are verified when benchmarked
    assert runner.tier_cases("full", cases) == [c for c in cases if c.suite not in benchmarked_only]
    plan = runner.plan("quick", device="cpu", modes=["exact"], dtypes=["float32"])
    cheap = len([c for c in quick if c.suite not in layer_suites]) + runner.RANDOM_SPECS["quick"]
    assert len(plan.checks) == len(quick) + runner.RANDOM_SPECS["quick"] + len(runner.OTHER_LAYOUTS) * cheap
    assert any(plan.gradients) and not all(plan.gradients)  # small inputs only


def test_check_with_nothing_to_run_is_not_a_pass(capsys):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA device: every CUDA check is skipped there")
    assert main(["check", "--device", "cuda", "--suite", "edge", "--random", "0", "--jobs", "1"]) == EXIT_NOTHING_RAN
    assert "NOTHING RAN" in capsys.readouterr().out


def test_a_load_error_fails_the_check_and_says_why(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    (tmp_path / "roll.py").write_text((Path(__file__).parents[1] / "impls" / "torch_roll.py").read_text())
    args = ["--impls-dir", str(tmp_path), "check", "--suite", "edge", "--random", "0", "--mode", "exact", "--jobs", "1"]
    assert main(args) == EXIT_FAILED
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "every check that ran passed" in last and "broken.py" in last and "did not load" in last


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--cases-dir", "/nonexistent"], "--cases-dir: folder /nonexistent does not exist"),
        (["check", "--device", "xpu"], "--device: expected cpu or cuda"),
        (["check", "--device", "banana"], "--device: expected a torch device such as cpu, cuda or cuda:1, got 'banana'"),
        (["check", "--case", "big_kernel=13"], "--case: case string: missing keys ['batch', 'channels', 'groups'"),
        (["check", "--case", "big_kernel=13 big_kernel=15"], "key 'big_kernel' given twice"),
        (["check", "--impl", "nope"], "--impl: unknown implementation(s) ['nope']"),
        (["check", "--case", "big_kernel=13", "--suite", "edge"], "--case checks exactly one case"),
    ],
)
def test_usage_errors_are_one_line_naming_the_argument(args, message, capsys):
    assert main(args) == EXIT_USAGE
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("swbench: error: ") and message in out


def test_an_empty_cases_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["check", "--cases-dir", str(tmp_path)]) == EXIT_USAGE
    assert "no case suites" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["check", "--random", "-5"], ["check", "--seed", "x"], ["check", "--jobs", "0"]])
def test_bad_numbers_are_one_line_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected a whole number" in err


def test_a_missing_impls_folder_is_a_one_line_error():
    script = Path(sys.executable).parent / "swbench"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]
    env = {**os.environ, "SW_IMPLS_DIR": "/nonexistent"}
    done = subprocess.run([*command, "list"], capture_output=True, text=True, check=False, env=env)
    assert done.returncode == EXIT_USAGE
    assert done.stdout.strip() == "swbench: error: implementation folder /nonexistent does not exist (from --impls-dir or $SW_IMPLS_DIR)"
    assert "Traceback" not in done.stderr


def test_check_fails_on_a_bad_implementation_and_prints_a_working_reproducer(capsys):
    args = ["--impls-dir", BAD_IMPLS, "check", "--impl", "bad_shift_off_by_one", "--suite", "edge", "--random", "0", "--jobs", "1"]
    assert main(args) == 1
    out = capsys.readouterr().out
    reproducer = next(line.strip() for line in out.splitlines() if line.strip().startswith("swbench --impls-dir"))
    assert "[values] branch h:" in out and "elements differ; worst at index" in out
    assert f"--impls-dir {BAD_IMPLS}" in reproducer
    assert main(shlex.split(reproducer)[1:]) == 1
    assert reproducer in capsys.readouterr().out


def test_console_script_runs():
    script = Path(sys.executable).parent / "swbench"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]
    done = subprocess.run([*command, "list"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "torch_roll" in done.stdout


def test_list_shows_the_atomic_kernel_in_host_emulation(capsys):
    assert main(["list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "cuda_atomic" in line)
    assert "available (host emulation" in line and "no CUDA device" in line


def test_kernels_table_is_written_once_and_never_overwritten_silently(tmp_path, capsys):
    impls = tmp_path / "impls"  # one implementation's kernels: each table build costs seconds per kernel
    impls.mkdir()
    for name in ("cuda_atomic.py", "cuda_atomic.cu"):
        (impls / name).write_text((Path(__file__).parents[1] / "impls" / name).read_text())
    output, artifact = tmp_path / "kernels.md", tmp_path / "kernels.json"
    kernels = ["--impls-dir", str(impls), "kernels"]
    assert main([*kernels, "--output", str(output), "--json", str(artifact)]) == 0
    text = output.read_text()
    for kernel in ("sw_scatter_f32", "sw_gather_adjoint_f32"):
        for arch in ("sm_80", "sm_90"):
            assert any(kernel in row and arch in row for row in text.splitlines())
    rows = json.loads(artifact.read_text())["kernels"]  # the report's --kernels input
    assert {(r["kernel"], r["arch"]) for r in rows} >= {(k, a) for k in ("sw_scatter_f32", "sw_gather_adjoint_f32") for a in ("sm_80", "sm_90")}
    output.write_text("earlier report")
    assert main([*kernels, "--output", str(output)]) == 2  # a usage error, as for every command
    assert "exists" in capsys.readouterr().out and output.read_text() == "earlier report"
    assert main([*kernels, "--output", str(output), "--overwrite"]) == 0
    assert output.read_text() == text


def test_bad_case_strings_are_usage_errors(capsys):
    assert main(["check", "--case", "big_kernel=13 color=red"]) == 2
    out = capsys.readouterr().out
    assert "error: --case: case string: unknown keys ['color']" in out
    assert main(["check", "--case", "name=x big_kernel=12 small_kernel=3 channels=1 groups=1 batch=1 height=4 width=4"]) == 2
    assert "big_kernel must be odd, got 12" in capsys.readouterr().out


def test_kernels_reports_an_implementation_whose_kernels_do_not_build(tmp_path, capsys):
    (tmp_path / "broken_kernels.py").write_text(
        "import torch\n"
        "from harness import reference_forward\n"
        "from harness.registry import Computes, Implementation\n"
        "def figures(arch):\n"
        "    raise RuntimeError('ptxas exploded')\n"
        "IMPLEMENTATION = Implementation(name='broken_kernels', fn=reference_forward, computes=Computes.OPERATOR,\n"
        "    devices=('cpu',), dtypes=(torch.float32,), kernel_figures=figures)\n"
    )
    assert main(["--impls-dir", str(tmp_path), "kernels"]) == 1
    assert "- broken_kernels: RuntimeError: ptxas exploded" in capsys.readouterr().out
