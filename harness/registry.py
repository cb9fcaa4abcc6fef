"""Implementations of the SW operator: the record each one declares, and their discovery.

An implementation is one Python file in ``impls/`` (or one package, ``impls/<name>/__init__.py``,
for a large one) that defines a module-level ``IMPLEMENTATION = Implementation(...)``, or a record
an installed distribution registers under the ``shiftwise_bench.implementations`` entry-point
group (``ENTRY_POINT_GROUP``). Discovery imports every ``*.py`` file and package there (names
starting with ``_`` are skipped) and loads every such entry point; one that fails to import, or
declares nothing usable, is reported with its error and never stops the others; of two that
declare one name, the one added (or changed) last is the one reported.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.inputs import validate_inputs
from harness.reference import Branches, small_conv
from harness.spec import ShiftwiseSpec

#: Environment variable that overrides the default ``impls/`` folder.
IMPLS_ENV = "SW_IMPLS_DIR"
DEFAULT_IMPLS_DIR = Path(__file__).resolve().parent.parent / "impls"
#: The entry-point group under which an installed distribution registers implementations:
#: ``NAME = "module:IMPLEMENTATION"`` (or just ``"module"``, which defines ``IMPLEMENTATION``).
ENTRY_POINT_GROUP = "shiftwise_bench.implementations"


class Computes(enum.Enum):
    """What an implementation's function computes."""

    #: ``fn(x, weight, spec) -> (h, v, i)``: the whole operator.
    OPERATOR = "operator"
    #: ``fn(y, spec) -> (h, v, i)`` from the small conv's output ``y`` (B, C*nk, H+2e, W+2e);
    #: the harness runs the grouped conv (``harness.small_conv``) first.
    SHIFT_ADD = "shift_add"


class Role(enum.Enum):
    """What a computation is to the benchmarks and the report (declared, never guessed from a name)."""

    #: An implementation of the SW operator under test: what the report crowns or not.
    IMPLEMENTATION = "implementation"
    #: A way a user computes the same branches (or their sum) with plain PyTorch: what an
    #: implementation must beat. Checked against the reference when it is an implementation.
    PYTORCH_WAY = "pytorch_way"
    #: The same branches in a lower precision (FP16 / BF16): context, never the PyTorch way an
    #: FP32 implementation is judged against; checked within its own precision's bound.
    LOWER_PRECISION = "lower_precision"
    #: Another large-kernel operator (SLaK strips, UniRepLKNet's 13x13): context, not a rival answer.
    OTHER_OPERATOR = "other_operator"


@dataclass(frozen=True)
class Execution:
    """How an implementation runs on one device of this machine."""

    #: In words, for listings and reports ("native cpu", "host emulation: ...").
    mode: str
    #: Why it cannot run on the device here, or None when it can.
    unavailable: str | None = None
    #: GPU code run in an emulation (host build, Numba's simulator): checked like any other
    #: implementation, on smaller shapes, and never benchmarked.
    emulated: bool = False
    #: the emulation is a host build of a ``.cu`` (``harness.cudac``): its checking modes apply
    host_build: bool = False


#: Why nothing runs on ``cuda`` here (the one wording: ``runs_on``, ``harness.eligibility``).
NO_CUDA_DEVICE = "no CUDA device (torch.cuda.is_available() is False)"

#: ``backward=AUTOGRAD``: the implementation's backward is autograd through its own forward
#: (``autograd=True``: its own ``torch.autograd.Function``, or PyTorch ops).
AUTOGRAD = "autograd"

#: ``backward(x, weight, spec, grad_h, grad_v, grad_i) -> (grad_x, grad_weight)``.
Backward = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class PluginOrigin:
    """Where an installed plug-in's record came from: its distribution and entry point."""

    distribution: str
    version: str
    #: ``name = value``, as in the distribution's ``entry_points.txt``
    entry_point: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}, entry point {self.entry_point}"


def native(device: torch.device) -> Execution:
    """The default ``execution``: runs natively wherever its ``devices`` allow."""
    return Execution(f"native {device.type}")


@dataclass(frozen=True)
class Implementation:
    """The declarative record of one implementation.

    ``execution(device)`` says how it runs on ``device`` here: its mode in words, the reason it
    cannot run (a missing package, ...) or None, and whether it is an emulation of GPU code.
    The harness already checks that the device type is in ``devices`` and that a CUDA device
    exists before asking.
    """

    name: str
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    computes: Computes
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    execution: Callable[[torch.device], Execution] = native
    autograd: bool = False
    description: str = ""
    #: What it is to the benchmarks: an SW implementation under test, or a PyTorch way.
    role: Role = Role.IMPLEMENTATION
    #: Bytes it moves for (spec, input shape, itemsize), by its own traffic model.
    traffic: Callable[[ShiftwiseSpec, tuple[int, int, int, int], int], int] | None = None
    #: ptxas figures of its GPU kernels for an architecture ("sm_80"), for the kernels table.
    kernel_figures: Callable[[str], list] | None = None
    #: ``impl="auto"``'s preference: of the implementations that run natively on a device in a
    #: dtype, the highest rank is picked (ties by name); declared from the layer benchmarks.
    rank: int = 0
    #: The whole deployed SW layer in one pass (``harness.models.layers.DeployedLayer``), or None.
    deployed: Callable[..., torch.Tensor] | None = None
    #: Its own backward of the operator (``run_backward``): a ``Backward`` callable, ``AUTOGRAD``
    #: (autograd through ``fn``), or None (the custom op then uses the reference's backward).
    #: The gradient of a pruned kernel's weights is zero, and a pruned kernel must not be read.
    backward: Backward | str | None = None
    #: The file (or a package's ``__init__.py``) it was loaded from; set by discovery.
    source: Path | None = field(default=None, compare=False)
    #: The installed distribution and entry point it came from (None: a file of the folder); set by discovery.
    plugin: PluginOrigin | None = field(default=None, compare=False)

    @property
    def origin(self) -> str:
        """Where it came from, in words: ``impls/name.py``, ``impls/name/``, or the distribution,
        its version and the entry point."""
        if self.plugin is not None:
            return str(self.plugin)
        if self.source is None:
            return "not discovered (built in code)"
        folder = self.source.parent.parent if self.source.name == "__init__.py" else self.source.parent
        return f"{folder.name}/{_label(self.source)}"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Implementation name must be an identifier, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"Implementation {self.name}: fn must be callable, got {type(self.fn).__name__}")
        if not isinstance(self.computes, Computes):
            raise TypeError(f"Implementation {self.name}: computes must be a Computes, got {self.computes!r}")
        unknown = set(self.devices) - {"cpu", "cuda"}
        if not self.devices or unknown:
            raise ValueError(f"Implementation {self.name}: devices must be a non-empty subset of cpu, cuda, got {self.devices}")
        if not self.dtypes or not all(isinstance(d, torch.dtype) and d.is_floating_point for d in self.dtypes):
            raise ValueError(f"Implementation {self.name}: dtypes must be floating torch dtypes, got {self.dtypes}")
        if not isinstance(self.role, Role) or self.role not in (Role.IMPLEMENTATION, Role.PYTORCH_WAY):
            raise ValueError(f"Implementation {self.name}: role must be Role.IMPLEMENTATION or Role.PYTORCH_WAY, got {self.role!r}")
        if self.backward == AUTOGRAD and not self.autograd:
            raise ValueError(f"Implementation {self.name}: backward=AUTOGRAD needs autograd=True")
        if self.backward is not None and self.backward != AUTOGRAD and not callable(self.backward):
            raise TypeError(
                f"Implementation {self.name}: backward must be callable, AUTOGRAD or None, got {type(self.backward).__name__}"
            )
        if not callable(self.execution):
            raise TypeError(f"Implementation {self.name}: execution must be callable, got {type(self.execution).__name__}")
        if not isinstance(self.rank, int) or isinstance(self.rank, bool):
            raise TypeError(f"Implementation {self.name}: rank must be an int, got {self.rank!r}")
        if self.deployed is not None and not callable(self.deployed):
            raise TypeError(f"Implementation {self.name}: deployed must be callable or None, got {type(self.deployed).__name__}")

    def runs_on(self, device: str | torch.device = "cpu") -> Execution:
        """How it runs on ``device`` here; ``unavailable`` set when it cannot."""
        device = torch.device(device)
        if device.type not in self.devices:
            return Execution("not supported", f"runs on {', '.join(self.devices)}, not {device.type}")
        if device.type == "cuda" and not torch.cuda.is_available():
            return Execution("no device", NO_CUDA_DEVICE)
        execution = self.execution(device)
        if not isinstance(execution, Execution):
            raise TypeError(f"implementation {self.name}: execution({device}) must return an Execution, got {execution!r}")
        return execution

    def unavailable_reason(self, device: str | torch.device = "cpu") -> str | None:
        """Why this implementation cannot run on ``device`` here, or None if it can."""
        return self.runs_on(device).unavailable

    def execution_mode(self, device: str | torch.device = "cpu") -> str:
        """How it runs on ``device`` (e.g. host emulation of a CUDA kernel), for listings."""
        return self.runs_on(device).mode

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
        """Validate the inputs, run the implementation, check and return its three branches."""
        validate_inputs(x, weight, spec, dtypes=self.dtypes, devices=self.devices, name=self.name)
        if not self.autograd and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            raise RuntimeError(
                f"implementation {self.name} has no backward (autograd=False), but its inputs require grad: "
                "its outputs would silently carry no gradient. Call it under torch.no_grad() (inference), "
                "or pick an implementation with autograd=True"
            )
        if self.computes is Computes.SHIFT_ADD:
            result = self.fn(small_conv(x, weight, spec), spec)
        else:
            result = self.fn(x, weight, spec)
        return _checked_result(self.name, result, x)

    def run_backward(
        self, x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, grads: Branches
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_x, grad_weight) of the operator at (x, weight) for the branch gradients
        ``grads`` (each shaped like x), by this implementation's declared ``backward``."""
        if self.backward is None:
            raise RuntimeError(f"implementation {self.name} declares no backward (backward=None)")
        validate_inputs(x, weight, spec, dtypes=self.dtypes, devices=self.devices, name=self.name)
        for label, grad in zip("hvi", grads):
            if not isinstance(grad, torch.Tensor) or grad.shape != x.shape or grad.dtype != x.dtype or grad.device != x.device:
                raise ValueError(f"{self.name} backward: grad_{label} must be {tuple(x.shape)} {x.dtype} on {x.device}, got {_described(grad)}")
        if self.backward == AUTOGRAD:
            with torch.enable_grad():
                xx, ww = x.detach().requires_grad_(), weight.detach().requires_grad_()
                result = torch.autograd.grad(tuple(self(xx, ww, spec)), (xx, ww), tuple(grads), allow_unused=True)
            result = tuple(torch.zeros_like(t) if g is None else g for g, t in zip(result, (x, weight)))
        else:
            with torch.no_grad():
                result = self.backward(x, weight, spec, *grads)
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(f"implementation {self.name}: backward must return (grad_x, grad_weight), got {type(result).__name__}")
        for label, grad, like in zip(("grad_x", "grad_weight"), result, (x, weight)):
            if not isinstance(grad, torch.Tensor) or grad.shape != like.shape or grad.dtype != like.dtype or grad.device != like.device:
                raise ValueError(
                    f"implementation {self.name}: backward's {label} must be {tuple(like.shape)} {like.dtype} "
                    f"on {like.device}, got {_described(grad)}"
                )
        return result


def _described(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {value.dtype} on {value.device}"
    return type(value).__name__


def _checked_result(name: str, result: object, x: torch.Tensor) -> Branches:
    if not isinstance(result, tuple) or len(result) != 3:
        raise TypeError(f"implementation {name} must return three tensors (h, v, i), got {type(result).__name__}")
    for label, branch in zip("hvi", result):
        if not isinstance(branch, torch.Tensor):
            raise TypeError(f"implementation {name}: branch {label} must be a torch.Tensor, got {type(branch).__name__}")
        if branch.shape != x.shape or branch.dtype != x.dtype or branch.device != x.device:
            raise ValueError(
                f"implementation {name}: branch {label} must be {tuple(x.shape)} {x.dtype} on {x.device}, "
                f"got {tuple(branch.shape)} {branch.dtype} on {branch.device}"
            )
    return Branches(*result)


@dataclass(frozen=True)
class Discovery:
    """What a scan of an ``impls/`` folder found."""

    folder: Path
    implementations: Mapping[str, Implementation]
    #: file name -> why it could not be loaded (import error with traceback tail, or a bad record)
    errors: Mapping[str, str]


def impls_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder to scan: ``path``, else ``$SW_IMPLS_DIR``, else the project's ``impls/``."""
    chosen = path if path is not None else os.environ.get(IMPLS_ENV) or DEFAULT_IMPLS_DIR
    return Path(chosen).resolve()


def discover(path: str | os.PathLike | None = None, *, plugins: bool = True) -> Discovery:
    """Import every implementation file in the folder and, with ``plugins``, load every entry
    point of ``ENTRY_POINT_GROUP`` of the installed distributions; collect records and load errors."""
    folder = impls_dir(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"implementation folder {folder} does not exist (from --impls-dir or ${IMPLS_ENV})")
    errors: dict[str, str] = {}
    loaded: list[tuple[int, str, Implementation]] = []
    for file, version in sorted(_candidates(folder), key=lambda item: (item[1], item[0].name)):
        label = _label(file)
        try:
            loaded.append((version, label, _load_record(file, version)))
        except (Exception, SystemExit) as error:  # a broken file must not stop the others
            errors[label] = _described_error(error)
    for entry_point in _plugin_entry_points() if plugins else ():
        label = plugin_label(entry_point)
        try:
            record = _load_plugin(entry_point)
        except (Exception, SystemExit) as error:  # a broken plug-in neither
            errors[label] = _described_error(error)
            continue
        loaded.append((_version_of(record.source) if record.source else 0, label, record))
    found: dict[str, Implementation] = {}
    # Oldest first (stable: ties keep the load order), so that of two declaring one name the
    # one added or changed last is blamed, whether a file or a plug-in.
    for _, label, record in sorted(loaded, key=lambda item: item[0]):
        if record.name in found:
            errors[label] = f"duplicate implementation name {record.name!r}, already declared in {_where(found[record.name])}"
            continue
        found[record.name] = record
    _note_discovery(folder, found)
    return Discovery(folder, dict(sorted(found.items())), dict(sorted(errors.items())))


def _described_error(error: BaseException) -> str:
    tail = "".join(traceback.format_exception(error)[-3:]).strip()
    return f"{type(error).__name__}: {error}\n{tail}"


def _where(record: Implementation) -> str:
    """Where a record was declared, as in its load-error label."""
    return str(record.plugin) if record.plugin is not None else _label(record.source)


def _plugin_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed entry points of ``ENTRY_POINT_GROUP``, by distribution and name."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(found, key=lambda ep: (ep.dist.name if ep.dist else "", ep.name, ep.value))


def plugin_label(entry_point: importlib.metadata.EntryPoint) -> str:
    """An entry point in words, the key of its load error: ``dist version, entry point name = value``."""
    return str(_plugin_origin(entry_point))


def _plugin_origin(entry_point: importlib.metadata.EntryPoint) -> PluginOrigin:
    dist = entry_point.dist
    name, version = (dist.name, dist.version) if dist is not None else ("(unknown distribution)", "?")
    return PluginOrigin(name, version, f"{entry_point.name} = {entry_point.value}")


def _load_plugin(entry_point: importlib.metadata.EntryPoint) -> Implementation:
    """Load one entry point: a record, or a module that defines ``IMPLEMENTATION``. Imported
    modules stay in ``sys.modules``, so a repeated discovery reuses them."""
    loaded = entry_point.load()
    named = f"entry point {entry_point.name} = {entry_point.value}"
    if isinstance(loaded, types.ModuleType):
        record = getattr(loaded, "IMPLEMENTATION", None)
        if not isinstance(record, Implementation):
            got = type(record).__name__ if record is not None else "nothing"
            raise TypeError(f"{named}: module {loaded.__name__} must define IMPLEMENTATION = harness.Implementation(...), got {got}")
    elif isinstance(loaded, Implementation):
        record = loaded
    else:
        raise TypeError(f"{named} must name a harness.Implementation (or a module defining IMPLEMENTATION), got {type(loaded).__name__}")
    if record.name != entry_point.name:
        raise ValueError(f"{named} declares the implementation {record.name!r}: name the entry point {record.name!r}")
    return dataclasses.replace(record, source=_plugin_source(entry_point.module), plugin=_plugin_origin(entry_point))


def _plugin_source(module_name: str) -> Path | None:
    """The file a plug-in was loaded from: its top-level package's ``__init__.py`` (so that
    everything in the package is its own, as for a package in ``impls/``), else its module."""
    for name in (module_name.partition(".")[0], module_name):
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            return Path(file).resolve()
    return None


#: (folder, sys.path) -> (what its last discovery found: (name, record) pairs, generation number)
_DISCOVERED: dict[tuple[Path, tuple[str, ...]], tuple[frozenset, int]] = {}


def _note_discovery(folder: Path, found: Mapping[str, Implementation]) -> None:
    # Records are cached per file version (and plug-ins' modules by sys.modules), so an
    # unchanged file or plug-in gives the same (equal) record.
    found_set = frozenset(found.items())
    key = (folder, tuple(sys.path))
    previous = _DISCOVERED.get(key)
    if previous is None or previous[0] != found_set:
        _DISCOVERED[key] = (found_set, max((g for _, g in _DISCOVERED.values()), default=0) + 1)


def generation(path: str | os.PathLike | None = None) -> int:
    """A number that changes whenever a discovery of the folder finds a different set of records
    (a file added, removed or modified: records are loaded per file version; a plug-in installed
    or removed); 0 before the first discovery of the folder with this ``sys.path`` (where
    installed distributions, hence plug-ins, are found). Caches of what was derived from the
    records (``resolve_impl``) key on it. Cheap (no scan): it is read on every layer call."""
    chosen = path if path is not None else os.environ.get(IMPLS_ENV) or DEFAULT_IMPLS_DIR
    entry = _DISCOVERED.get((_resolved_folder(os.fspath(chosen)), tuple(sys.path)))
    return 0 if entry is None else entry[1]


@functools.lru_cache(maxsize=16)
def _resolved_folder(chosen: str) -> Path:
    """``Path(chosen).resolve()``, once per path (a syscall per path part: tens of us); a
    relative path is resolved against the working directory of its first use."""
    return Path(chosen).resolve()


def _candidates(folder: Path) -> list[tuple[Path, int]]:
    """Implementation files (``name.py``) and packages (``name/__init__.py``) with their version:
    the newest modification time among the package's files."""
    found = []
    for entry in folder.iterdir():
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            found.append((entry, _version_of(entry)))
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            found.append((entry / "__init__.py", _version_of(entry / "__init__.py")))
    return found


def _version_of(file: Path) -> int:
    """A module's version: its modification time; a package's (``__init__.py``): the newest among its files."""
    if file.name == "__init__.py":
        return max(f.stat().st_mtime_ns for f in file.parent.rglob("*.py"))
    return file.stat().st_mtime_ns


def _label(file: Path | None) -> str:
    """``name.py`` for a file, ``name/`` for a package."""
    if file is None:
        return "?"
    return f"{file.parent.name}/" if file.name == "__init__.py" else file.name


def implementations(path: str | os.PathLike | None = None) -> dict[str, Implementation]:
    """The implementations that loaded from the folder, by name (see ``discover`` for errors)."""
    return dict(discover(path).implementations)


@functools.lru_cache(maxsize=None)
def _load_record(file: Path, mtime_ns: int) -> Implementation:
    """Import one implementation file or package. Cached per version, so repeated discovery
    reuses the module (and whatever it compiled) until a file changes; failures are not cached.
    The module name is stable across processes (a digest of the path), so Numba's on-disk
    cache can key on it."""
    package = file.name == "__init__.py"
    where = file.parent.parent if package else file.parent
    stem = file.parent.name if package else file.stem
    digest = hashlib.sha1(str(where).encode()).hexdigest()[:12]
    module_name = f"sw_impls_{digest}_{stem}"
    module_spec = importlib.util.spec_from_file_location(
        module_name, file, submodule_search_locations=[str(file.parent)] if package else None
    )
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {file} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    record = getattr(module, "IMPLEMENTATION", None)
    if not isinstance(record, Implementation):
        raise TypeError(
            f"{_label(file)} must define IMPLEMENTATION = harness.Implementation(...), "
            f"got {type(record).__name__ if record is not None else 'nothing'}"
        )
    return dataclasses.replace(record, source=file)
