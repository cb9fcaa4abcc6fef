import shlex
import subprocess
import sys
from pathlib import Path

from harness.cli import main

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
    assert main(["check", "--suite", "edge", "--random", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "torch_roll" in line)
    # 8 edge cases + 3 random, in 2 modes x 2 dtypes: 44 checks, all passed, none failed
    assert [cell.strip() for cell in row.split("│")[1:5]] == ["torch_roll", "44", "44", "0"]


def test_check_fails_on_a_bad_implementation_and_prints_a_working_reproducer(capsys):
    args = ["--impls-dir", BAD_IMPLS, "check", "--impl", "bad_shift_off_by_one", "--suite", "edge", "--random", "0"]
    assert main(args) == 1
    out = capsys.readouterr().out
    reproducer = next(line.strip() for line in out.splitlines() if line.strip().startswith("swbench --impls-dir"))
    assert "[values] branch h:" in out and "elements differ; worst at index" in out
    assert f"--impls-dir {BAD_IMPLS}" in reproducer
    assert main(shlex.split(reproducer)[1:]) == 1
    assert reproducer in capsys.readouterr().out


def test_check_names_unknown_implementations(capsys):
    assert main(["check", "--impl", "nope", "--random", "0"]) == 1
    assert "unknown implementation(s) ['nope']" in capsys.readouterr().out


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
    output = tmp_path / "kernels.md"
    assert main(["kernels", "--output", str(output)]) == 0
    text = output.read_text()
    for kernel in ("sw_scatter_f32", "sw_gather_adjoint_f32"):
        for arch in ("sm_80", "sm_90"):
            assert any(kernel in row and arch in row for row in text.splitlines())
    output.write_text("earlier report")
    assert main(["kernels", "--output", str(output)]) == 1
    assert "exists" in capsys.readouterr().out and output.read_text() == "earlier report"
    assert main(["kernels", "--output", str(output), "--overwrite"]) == 0
    assert output.read_text() == text


def test_bad_case_strings_are_usage_errors(capsys):
    assert main(["check", "--case", "big_kernel=13 color=red"]) == 2
    out = capsys.readouterr().out
    assert "error: case string: unknown keys ['color']" in out
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
