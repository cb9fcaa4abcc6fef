"""Discovery of impls/, the declarative record, and the harness's input validation."""

import textwrap

import pytest
import torch

from harness import Computes, Execution, Implementation, ShiftwiseSpec, discover, implementations, reference_forward
from harness.registry import IMPLS_ENV

GOOD = """
    import torch
    from harness import reference_forward
    from harness.registry import Computes, Implementation

    IMPLEMENTATION = Implementation(
        name="{name}", fn=reference_forward, computes=Computes.OPERATOR,
        devices=("cpu",), dtypes=(torch.float32,),
    )
"""


def _write(folder, name, text):
    (folder / name).write_text(textwrap.dedent(text))


def test_project_impls_load_without_errors():
    found = discover()
    assert found.errors == {}, found.errors
    assert "torch_roll" in found.implementations
    assert found.implementations["torch_roll"].unavailable_reason("cpu") is None


def test_broken_files_are_listed_and_never_stop_the_others(tmp_path):
    _write(tmp_path, "a_good.py", GOOD.format(name="good"))
    _write(tmp_path, "b_import_error.py", "import no_such_module_anywhere\n")
    _write(tmp_path, "c_syntax_error.py", "def broken(:\n")
    _write(tmp_path, "d_no_record.py", "X = 1\n")
    _write(tmp_path, "e_duplicate.py", GOOD.format(name="good"))
    _write(tmp_path, "f_raises.py", "raise RuntimeError('kernel source missing')\n")
    _write(tmp_path, "g_bad_record.py", GOOD.format(name="not an identifier"))
    _write(tmp_path, "_helper.py", "raise RuntimeError('never imported')\n")
    _write(tmp_path, "z_good.py", GOOD.format(name="other"))
    found = discover(tmp_path)
    assert sorted(found.implementations) == ["good", "other"]
    assert found.implementations["good"].source == tmp_path / "a_good.py"
    errors = found.errors
    assert sorted(errors) == ["b_import_error.py", "c_syntax_error.py", "d_no_record.py", "e_duplicate.py", "f_raises.py", "g_bad_record.py"]
    assert "ModuleNotFoundError" in errors["b_import_error.py"] and "no_such_module_anywhere" in errors["b_import_error.py"]
    assert "SyntaxError" in errors["c_syntax_error.py"]
    assert "must define IMPLEMENTATION" in errors["d_no_record.py"] and "got nothing" in errors["d_no_record.py"]
    assert "duplicate implementation name 'good'" in errors["e_duplicate.py"]
    assert "RuntimeError: kernel source missing" in errors["f_raises.py"]
    assert "must be an identifier" in errors["g_bad_record.py"]


def test_folder_comes_from_the_environment(tmp_path, monkeypatch):
    _write(tmp_path, "only.py", GOOD.format(name="only_one"))
    monkeypatch.setenv(IMPLS_ENV, str(tmp_path))
    assert list(implementations()) == ["only_one"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(tmp_path / "nope")


def _impl(fn=reference_forward, **overrides):
    fields = dict(name="probe", fn=fn, computes=Computes.OPERATOR, devices=("cpu",), dtypes=(torch.float32,))
    return Implementation(**(fields | overrides))


SPEC = ShiftwiseSpec.random(big_kernel=7, small_kernel=3, channels=2, groups=2, seed=0)
X = torch.zeros(1, 2, 5, 5)
W = torch.zeros(SPEC.weight_shape)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((X[0], W, SPEC), ValueError, r"x must be 4-D \(B, C, H, W\), got shape \(2, 5, 5\)"),
        ((torch.zeros(1, 3, 5, 5), W, SPEC), ValueError, r"must have C = 2 channels .* got shape \(1, 3, 5, 5\)"),
        ((torch.zeros(1, 2, 0, 5), W, SPEC), ValueError, "must not be empty"),
        ((X, W[:, :, :2], SPEC), ValueError, r"weight must have shape \(C\*nk, 1, k, k\) = \(6, 1, 3, 3\), got \(6, 1, 2, 3\)"),
        ((X, W.double(), SPEC), TypeError, "same dtype, got torch.float32 and torch.float64"),
        ((X.double(), W.double(), SPEC), TypeError, "supports dtypes torch.float32, got torch.float64"),
        ((X.half(), W.half(), SPEC), TypeError, "got torch.float16"),
        ((X, W, "spec"), TypeError, "spec must be a ShiftwiseSpec, got str"),
        ((X.numpy(), W, SPEC), TypeError, "x must be a torch.Tensor, got ndarray"),
        ((X, W.to("meta"), SPEC), ValueError, "same device, got cpu and meta"),
        ((X.to("meta"), W.to("meta"), SPEC), ValueError, "runs on cpu, got a tensor on meta"),
    ],
)
def test_bad_inputs_are_refused_before_the_implementation_runs(args, error, message):
    calls = []
    impl = _impl(fn=lambda *a: calls.append(a))
    with pytest.raises(error, match=message):
        impl(*args)
    assert calls == []


@pytest.mark.parametrize(
    "result, error, message",
    [
        ((X, X), TypeError, "must return three tensors"),
        ((X, X, 0), TypeError, "branch i must be a torch.Tensor, got int"),
        ((X, X[:, :, :4], X), ValueError, r"branch v must be \(1, 2, 5, 5\) torch.float32 on cpu, got \(1, 2, 4, 5\)"),
        ((X, X, X.double()), ValueError, "got .* torch.float64"),
    ],
)
def test_malformed_results_are_refused(result, error, message):
    with pytest.raises(error, match=message):
        _impl(fn=lambda *a: result)(X, W, SPEC)


def test_shift_add_implementations_receive_the_small_conv_output():
    seen = []

    def shift_add(y, spec):
        seen.append(y.shape)
        return reference_forward(X, W, spec)

    _impl(fn=shift_add, computes=Computes.SHIFT_ADD)(X, W, SPEC)
    assert seen == [(1, SPEC.channels * SPEC.nk, 5 + 2 * SPEC.extra_pad, 5 + 2 * SPEC.extra_pad)]


def test_availability_reasons():
    impl = _impl(execution=lambda device: Execution("native", "needs the frobnicator package"))
    assert impl.unavailable_reason("cpu") == "needs the frobnicator package"
    assert impl.unavailable_reason("cuda") == "runs on cpu, not cuda"
    cuda_impl = _impl(devices=("cuda",))
    if not torch.cuda.is_available():
        assert "no CUDA device" in cuda_impl.unavailable_reason("cuda")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(devices=()), "devices must be a non-empty subset"),
        (dict(devices=("tpu",)), "devices must be a non-empty subset"),
        (dict(dtypes=(torch.int32,)), "dtypes must be floating torch dtypes"),
        (dict(computes="operator"), "computes must be a Computes"),
        (dict(fn=3), "fn must be callable"),
    ],
)
def test_records_are_validated(overrides, message):
    with pytest.raises((TypeError, ValueError), match=message):
        _impl(**overrides)


def test_a_duplicate_name_blames_the_file_added_last(tmp_path):
    import os

    _write(tmp_path, "z_first.py", GOOD.format(name="same"))
    _write(tmp_path, "a_later.py", GOOD.format(name="same"))
    first = (tmp_path / "z_first.py").stat().st_mtime_ns
    os.utime(tmp_path / "a_later.py", ns=(first + 10**9, first + 10**9))  # added a second later
    found = discover(tmp_path)
    assert found.implementations["same"].source == tmp_path / "z_first.py"
    assert "already declared in z_first.py" in found.errors["a_later.py"]


def test_an_implementation_may_be_a_package(tmp_path):
    package = tmp_path / "split"
    package.mkdir()
    (package / "kernel.py").write_text("from harness import reference_forward as forward\n")
    text = textwrap.dedent(GOOD.format(name="split")).replace("fn=reference_forward", "fn=forward")
    (package / "__init__.py").write_text("from .kernel import forward\n" + text)
    found = discover(tmp_path)
    assert found.errors == {}
    assert found.implementations["split"].source == package / "__init__.py"
    broken = tmp_path / "broken_pkg"
    broken.mkdir()
    (broken / "__init__.py").write_text("from .missing import nothing\n")
    assert "ModuleNotFoundError" in discover(tmp_path).errors["broken_pkg/"]


def test_an_implementation_without_autograd_refuses_inputs_that_require_grad():
    spec = ShiftwiseSpec.random(big_kernel=5, small_kernel=3, channels=2, groups=1, seed=0)
    impl = _impl(autograd=False)
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    weight = torch.randn(spec.weight_shape)
    with pytest.raises(RuntimeError, match="has no backward .autograd=False., but its inputs require grad"):
        impl(x, weight, spec)
    with torch.no_grad():
        impl(x, weight, spec)  # inference is fine
