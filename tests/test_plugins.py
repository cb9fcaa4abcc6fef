"""Installed plug-ins: implementations registered by a distribution under the entry-point group
``shiftwise_bench.implementations``, discovered beside impls/ with the same validation, isolation
of load errors and rule for name clashes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from harness.registry import DEFAULT_IMPLS_DIR, ENTRY_POINT_GROUP, discover, generation

DATA = Path(__file__).resolve().parent / "data"
BIN = Path(sys.executable).parent

RECORD = """
    import torch
    from harness import reference_forward
    from harness.registry import Computes, Implementation

    IMPLEMENTATION = Implementation(
        name="{name}", fn=reference_forward, computes=Computes.OPERATOR,
        devices=("cpu",), dtypes=(torch.float32,), rank={rank},
    )
"""


def make_distribution(root: Path, name: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "1.0") -> None:
    """A distribution as an installer leaves it on a path entry: its modules and a
    ``NAME-VERSION.dist-info`` with METADATA and entry_points.txt."""
    for module, text in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(text))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")


@pytest.fixture
def unique():
    """A fresh module-name prefix: imported plug-in modules stay in sys.modules across tests."""
    prefix = f"swp_{uuid.uuid4().hex[:8]}"
    yield prefix
    for name in [n for n in sys.modules if n.startswith(prefix)]:
        del sys.modules[name]


def _folder(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "impls"
    folder.mkdir()
    for name, text in (files or {}).items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def test_a_plugin_is_discovered_beside_the_folder_with_its_origin(tmp_path, monkeypatch, unique):
    folder = _folder(tmp_path, {"a_file.py": RECORD.format(name="from_file", rank=0)})
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(
        site, "sw-good", {"good_attr": f"{unique}_a:IMPLEMENTATION", "good_module": f"{unique}_b"},
        {f"{unique}_a": RECORD.format(name="good_attr", rank=0), f"{unique}_b": RECORD.format(name="good_module", rank=0)},
        version="2.5",
    )  # fmt: skip
    assert "good_attr" not in discover(folder).implementations
    monkeypatch.syspath_prepend(str(site))
    found = discover(folder)
    assert found.errors == {}
    assert sorted(found.implementations) == ["from_file", "good_attr", "good_module"]
    attr = found.implementations["good_attr"]
    assert attr.origin == f"sw-good 2.5, entry point good_attr = {unique}_a:IMPLEMENTATION"
    assert attr.source == site / f"{unique}_a.py"  # what the integrity checks attribute tampering to
    assert found.implementations["good_module"].plugin.entry_point == f"good_module = {unique}_b"
    assert found.implementations["from_file"].origin == "impls/a_file.py" and found.implementations["from_file"].plugin is None
    assert "good_attr" not in discover(folder, plugins=False).implementations


def test_broken_plugins_are_load_errors_and_never_stop_the_others(tmp_path, monkeypatch, unique):
    folder = _folder(tmp_path, {"a_file.py": RECORD.format(name="from_file", rank=0)})
    site = tmp_path / "site"
    site.mkdir()
    entry_points = {
        "fine": f"{unique}_fine:IMPLEMENTATION",
        "import_error": f"{unique}_imports:IMPLEMENTATION",
        "raises": f"{unique}_raises",
        "exits": f"{unique}_exits",
        "not_a_record": f"{unique}_fine:reference_forward",
        "module_without_record": f"{unique}_fine:torch",
        "no_record": f"{unique}_empty",
        "misnamed": f"{unique}_misnamed:IMPLEMENTATION",
        "missing_attribute": f"{unique}_fine:NOTHING",
        "bad_record": f"{unique}_bad:IMPLEMENTATION",
    }
    modules = {
        f"{unique}_fine": RECORD.format(name="fine", rank=0),
        f"{unique}_imports": "import no_such_module_anywhere\n",
        f"{unique}_raises": "raise RuntimeError('kernel source missing')\n",
        f"{unique}_exits": "raise SystemExit(3)\n",
        f"{unique}_empty": "X = 1\n",
        f"{unique}_misnamed": RECORD.format(name="other_name", rank=0),
        f"{unique}_bad": RECORD.format(name="not an identifier", rank=0),
    }
    make_distribution(site, "sw-broken", entry_points, modules)
    monkeypatch.syspath_prepend(str(site))
    found = discover(folder)
    assert sorted(found.implementations) == ["fine", "from_file"]

    def error(name):
        return found.errors[f"sw-broken 1.0, entry point {name} = {entry_points[name]}"]

    assert len(found.errors) == len(entry_points) - 1
    assert "ModuleNotFoundError" in error("import_error") and "no_such_module_anywhere" in error("import_error")
    assert "RuntimeError: kernel source missing" in error("raises")
    assert error("exits").startswith("SystemExit: 3")
    assert "must name a harness.Implementation" in error("not_a_record") and "got function" in error("not_a_record")
    assert "module torch must define IMPLEMENTATION = harness.Implementation(...), got nothing" in error("module_without_record")
    assert f"module {unique}_empty must define IMPLEMENTATION" in error("no_record")
    assert "declares the implementation 'other_name': name the entry point 'other_name'" in error("misnamed")
    assert "AttributeError" in error("missing_attribute")
    assert "must be an identifier" in error("bad_record")


def test_a_clashing_name_blames_the_one_added_last_file_or_plugin(tmp_path, monkeypatch, unique):
    folder = _folder(tmp_path, {"a_file.py": RECORD.format(name="same", rank=0)})
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "sw-clash", {"same": f"{unique}_same:IMPLEMENTATION"}, {f"{unique}_same": RECORD.format(name="same", rank=0)})
    monkeypatch.syspath_prepend(str(site))
    label = f"sw-clash 1.0, entry point same = {unique}_same:IMPLEMENTATION"
    file, plugin = folder / "a_file.py", site / f"{unique}_same.py"
    base = file.stat().st_mtime_ns

    os.utime(plugin, ns=(base + 10**9, base + 10**9))  # installed a second after the file was written
    found = discover(folder)
    assert found.implementations["same"].source == file
    assert found.errors == {label: "duplicate implementation name 'same', already declared in a_file.py"}

    os.utime(file, ns=(base + 2 * 10**9, base + 2 * 10**9))  # the file changed later
    found = discover(folder)
    assert found.implementations["same"].source == plugin
    assert found.errors == {"a_file.py": f"duplicate implementation name 'same', already declared in {label}"}


def test_caches_of_discovery_see_a_plugin_installed_on_the_path(tmp_path, monkeypatch, unique):
    """resolve_impl('auto') is cached on the discovery generation, which is keyed on the folder
    and sys.path: a higher-ranked plug-in on a new path entry is picked without a restart."""
    from harness.models.layers import resolve_impl
    from harness.registry import IMPLS_ENV

    folder = _folder(tmp_path, {"low.py": RECORD.format(name="low_rank", rank=1)})
    monkeypatch.setenv(IMPLS_ENV, str(folder))
    assert resolve_impl("auto", "cpu") == "low_rank"
    before = generation()
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "sw-high", {"high_rank": f"{unique}_high:IMPLEMENTATION"}, {f"{unique}_high": RECORD.format(name="high_rank", rank=99)})
    monkeypatch.syspath_prepend(str(site))
    assert generation() == 0  # nothing discovered yet with this sys.path
    assert resolve_impl("auto", "cpu") == "high_rank"
    assert generation() not in (0, before)
    monkeypatch.undo()  # the path entry gone again
    monkeypatch.setenv(IMPLS_ENV, str(folder))
    assert resolve_impl("auto", "cpu") == "low_rank"


def test_the_check_reproducer_of_a_plugin_names_no_folder(tmp_path, monkeypatch, unique):
    from harness.checking import CheckCase
    from harness.checking.check import check

    site = tmp_path / "site"
    site.mkdir()
    broken = RECORD.format(name="wrong", rank=0).replace(
        "fn=reference_forward", "fn=lambda x, w, s: tuple(2 * b for b in reference_forward(x, w, s))"
    )
    make_distribution(site, "sw-wrong", {"wrong": f"{unique}_wrong:IMPLEMENTATION"}, {f"{unique}_wrong": broken})
    monkeypatch.syspath_prepend(str(site))
    impl = discover().implementations["wrong"]
    case = CheckCase.parse(
        "name=x big_kernel=7 small_kernel=3 channels=2 groups=2 batch=1 height=5 width=6 tables=official seed=0 "
        "sparsity=0 dtype=float32 mode=float layout=strided device=cpu"
    )
    result = check(impl, case, gradients=False)
    assert result.failures and result.impls_dir is None
    assert result.reproducer.startswith("swbench check --impl wrong --case ")
    # a package is reproduced with the folder it is in, not the package itself
    package = tmp_path / "impls" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(broken).replace('"wrong"', '"wrong_pkg"'))
    in_package = check(discover(tmp_path / "impls").implementations["wrong_pkg"], case, gradients=False)
    assert in_package.impls_dir == tmp_path / "impls"
    assert in_package.reproducer.startswith(f"swbench --impls-dir {tmp_path / 'impls'} check --impl wrong_pkg")


@pytest.fixture(scope="module")
def installed_demo(tmp_path_factory) -> Path:
    """tests/data/sw_demo_plugin installed by pip into a temporary folder (a copy is built, so
    the build leaves nothing in tests/data)."""
    root = tmp_path_factory.mktemp("demo")
    source = shutil.copytree(DATA / "sw_demo_plugin", root / "src")
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return target


def test_an_installed_distribution_is_listed_checked_and_benchmarked(installed_demo, tmp_path):
    """The Done-when of issue 24: with no file added to impls/."""
    impls_before = sorted(p.name for p in DEFAULT_IMPLS_DIR.iterdir())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_demo), os.environ.get("PYTHONPATH", "")])}
    env.pop("SW_IMPLS_DIR", None)

    def run(*args):
        return subprocess.run([*args], env=env, capture_output=True, text=True, cwd=Path(__file__).parents[1])

    listing = run(str(BIN / "swbench"), "list")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    line = next(row for row in listing.stdout.splitlines() if "demo_strips" in row)
    assert "sw-demo-plugin 0.1.0, entry point" in line and "available (native cpu)" in line

    case = ("name=x big_kernel=13 small_kernel=3 channels=3 groups=2 batch=1 height=6 width=9 tables=official "
            "seed=0 sparsity=0.3 dtype=float32 mode=float layout=strided device=cpu")  # fmt: skip
    checked = run(str(BIN / "swbench"), "check", "--impl", "demo_strips", "--case", case)  # in a worker process
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASSED: 1 checks" in checked.stdout

    output = tmp_path / "run.json"
    bench = run(
        sys.executable, "-m", "pytest", "--benchmark-only", "--suite", "sweep_big_kernel", "-k", "[demo_strips- and -M7]",
        "--no-kernel-table", "--peak-gflops", "1", "--peak-gbps", "1", "--benchmark-max-time=0.01",
        "--benchmark-min-rounds=1", f"--benchmark-json={output}", "-p", "no:cacheprovider", "-q",
    )  # fmt: skip
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    data = json.loads(output.read_text())
    (timed,) = data["benchmarks"]
    assert timed["extra_info"]["computation"] == "demo_strips"
    assert timed["extra_info"]["verified"] == "matches the reference within the error bound"
    assert data["sw"]["failures"] == [] and data["sw"]["load_errors"] == {}
    assert sorted(p.name for p in DEFAULT_IMPLS_DIR.iterdir()) == impls_before
