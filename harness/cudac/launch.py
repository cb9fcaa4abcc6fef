"""GPU plumbing the project's GPU implementations share: the shared-memory limit, the widest
tile that fits, the dtype suffix of kernel names, move tables on the device, compile-time
specialisations of a ``.cu`` (one generated file per configuration) and the CuPy launcher
(the host build on the CPU)."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from harness.cudac.host import build_cache_dir
from harness.moves import move_tables
from harness.spec import ShiftwiseSpec

#: Dynamic shared memory a block may use without opting in (every architecture since sm_20).
SHARED_LIMIT = 48 * 1024
#: Largest power-of-two tiles tried first by ``widest_tile``.
TILES = (32, 16, 8, 4, 2, 1)
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_SCALARS = {"int": np.int32, "int32_t": np.int32, "unsigned": np.uint32, "unsigned int": np.uint32,
            "long long": np.int64, "int64_t": np.int64, "float": np.float32, "double": np.float64}  # fmt: skip


def dtype_suffix(dtype: torch.dtype) -> str:
    """The suffix of a kernel's name for ``dtype`` (``sw_scatter_f32``)."""
    try:
        return _SUFFIX[dtype]
    except KeyError:
        raise TypeError(f"no kernel for {dtype}; kernels exist for {sorted(map(str, _SUFFIX))}") from None


def widest_tile(shared_bytes: Callable[[int], int], limit: int = SHARED_LIMIT, tiles: Iterable[int] = TILES) -> int | None:
    """The first (widest) tile whose ``shared_bytes(tile)`` fits in ``limit``, or None."""
    return next((tile for tile in tiles if shared_bytes(tile) <= limit), None)


@functools.lru_cache(maxsize=64)
def device_move_tables(spec: ShiftwiseSpec, height: int, width: int, device: torch.device) -> dict[str, torch.Tensor]:
    """``harness.moves.move_tables`` as contiguous int32 tensors on ``device``, made once per
    (spec, map size, device)."""
    tables = move_tables(spec, height, width)
    return {name: torch.tensor(getattr(tables, name), device=device).contiguous()
            for name in ("rows", "row_moves", "columns", "column_moves", "identity")}  # fmt: skip


def _cache_dir() -> Path:
    path = build_cache_dir() / "specialised"
    path.mkdir(parents=True, exist_ok=True)
    return path


def specialise(path: str | Path, defines: Mapping[str, int]) -> Path:
    """A copy of ``path`` with ``#define NAME value`` lines first: one configuration of its
    compile-time constants, the same text for the host build and for NVRTC (so both builds
    see identical code). Written once per (source, defines), atomically; remembered per
    (source version, defines), so a call per launch costs a dictionary lookup, not a read and
    a hash of the file."""
    path = Path(path).resolve()
    return _specialised(path, path.stat().st_mtime_ns, tuple(sorted((name, int(value)) for name, value in defines.items())))


@functools.lru_cache(maxsize=256)
def _specialised(path: Path, mtime_ns: int, defines: tuple[tuple[str, int], ...]) -> Path:
    header = "".join(f"#define {name} {value}\n" for name, value in defines)
    text = f"{header}#line 1 \"{path.name}\"\n{path.read_text()}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    target = _cache_dir() / f"{path.stem}-{digest}.cu"
    if not target.exists():
        scratch = target.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(text)
        os.replace(scratch, target)
    return target


#: Pointee type of a pointer parameter -> the tensor dtype a kernel reads through it.
_POINTEES = {"float*": torch.float32, "double*": torch.float64, "int*": torch.int32, "int32_t*": torch.int32,
             "unsigned char*": torch.uint8, "long long*": torch.int64, "int64_t*": torch.int64}  # fmt: skip


def kernel_arguments(kernel: str, params, args, device: torch.device) -> list:
    """The arguments of one launch of ``kernel`` as the driver takes them: each tensor as its
    address (``data_ptr()``: no DLPack export, so a weight that requires grad, an
    ``nn.Parameter``, is passed like any tensor), each scalar as its C type's numpy scalar.
    A tensor the kernel would misread is refused with its parameter's name: not on
    ``device``, not contiguous (kernels index flat row-major arrays; a silent copy would lose
    an output's writes), or not of the pointee's dtype."""
    if len(args) != len(params):
        raise TypeError(f"kernel {kernel} takes {len(params)} arguments, got {len(args)}")
    packed = []
    for param, arg in zip(params, args):
        if not param.is_pointer:
            packed.append(_SCALARS[param.ctype](arg))
            continue
        if not isinstance(arg, torch.Tensor):
            raise TypeError(f"kernel {kernel}: {param.name} ({param.ctype}) expects a tensor, got {type(arg).__name__}")
        if arg.device != device:
            raise ValueError(f"kernel {kernel}: {param.name} must be on {device}, got a tensor on {arg.device}")
        if not arg.is_contiguous():
            raise ValueError(
                f"kernel {kernel}: {param.name} must be contiguous (the kernel indexes it as a flat row-major array), "
                f"got strides {tuple(arg.stride())} for shape {tuple(arg.shape)}"
            )
        expected = _POINTEES.get(param.ctype)
        if expected is not None and arg.dtype != expected:
            raise TypeError(f"kernel {kernel}: {param.name} ({param.ctype}) expects {expected}, got {arg.dtype}")
        packed.append(np.uint64(arg.data_ptr()))  # a device address: 8 bytes, as the pointer parameter
    return packed


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _cupy_module(path: Path, device_index: int, version: int):
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=path.read_text(), options=("-std=c++17",))


def cupy_launcher(path: str | Path, device: torch.device):
    """``launch(kernel, grid, block, *args, shared_bytes=)`` for the kernels of ``path``: the
    host build on the CPU; on a GPU, ``cupy.RawModule`` on torch's current stream (whichever
    stream is current at the launch), tensors passed by address (``kernel_arguments``),
    opting in to more than 48 KiB of dynamic shared memory when a launch asks for it. Made
    once per (file, device, file version: its modification time, so an edited ``.cu`` is
    rebuilt): a launch costs the argument packing and the driver call."""
    path = Path(path).resolve()
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", _device_index(device))
    return _launcher(path, device, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _launcher(path: Path, device: torch.device, version: int):
    from harness.cudac.modules import load_module
    from harness.cudac.source import CudaSource

    signatures = CudaSource.read(path).kernels
    if device.type == "cpu":
        module = load_module(path, device)

        def launch(kernel, grid, block, *args, shared_bytes=0):
            packed = kernel_arguments(kernel, signatures[kernel].params, args, device)
            # Past 48 KiB the GPU path opts in; the host build grants the same (the sm_80 maximum).
            module.launch(kernel, grid, block, *(int(a) if p.is_pointer else a.item() for p, a in zip(signatures[kernel].params, packed)),
                          shared_bytes=shared_bytes, opt_in=shared_bytes > SHARED_LIMIT)  # fmt: skip

        return launch

    import cupy

    index = device.index
    module = _cupy_module(path, index, version)
    functions: dict[tuple[str, int], object] = {}  # (kernel, opted-in shared bytes) -> cupy.RawKernel

    def function_for(kernel: str, shared_bytes: int):
        key = (kernel, shared_bytes if shared_bytes > SHARED_LIMIT else 0)
        if key not in functions:
            function = module.get_function(kernel)
            if key[1]:
                function.max_dynamic_shared_size_bytes = shared_bytes
            functions[key] = function
        return functions[key]

    def launch(kernel, grid, block, *args, shared_bytes=0):
        packed = kernel_arguments(kernel, signatures[kernel].params, args, device)
        stream = torch.cuda.current_stream(index).cuda_stream
        with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream):
            function_for(kernel, shared_bytes)(grid, block, tuple(packed), shared_mem=shared_bytes)

    return launch


@functools.lru_cache(maxsize=None)
def _shared_optin(index: int) -> int:
    import cupy

    return int(cupy.cuda.Device(index).attributes["MaxSharedMemoryPerBlockOptin"])


def max_shared_optin(device: torch.device) -> int:
    """Dynamic shared memory one block of ``device`` may use after opting in: the device's
    maximum on a GPU; in the host emulation, the smallest maximum of the target architectures
    (sm_80's 163 KiB), so a plan that fits there fits every target."""
    if device.type == "cpu":
        from harness.cudac.host import MAX_DYNAMIC_SHARED_OPTIN

        return MAX_DYNAMIC_SHARED_OPTIN
    return _shared_optin(_device_index(device))  # the device's attributes, read once per device


def branch_moves(spec: ShiftwiseSpec, height: int, width: int) -> tuple[int, int, int]:
    """In-map moves of one image by branch (horizontal, vertical, identity), from the move
    tables: the additions a gather-form kernel executes (their sum is ``scatter_moves``)."""
    e = spec.extra_pad
    tables = move_tables(spec, height, width)

    def landed(moves: np.ndarray, length: int, extent: int, other: int) -> int:
        # outputs p in 0..length-1 with 0 <= p - s < extent, times the other axis' outputs
        shifts = moves[..., 1][moves[..., 0] >= 0].astype(np.int64)
        return int(np.clip(np.minimum(length, extent + shifts) - np.maximum(0, shifts), 0, None).sum()) * other

    identity = int((tables.identity >= 0).sum()) * height * width
    return (landed(tables.row_moves, width, width + 2 * e, height),
            landed(tables.column_moves, height, height + 2 * e, width), identity)  # fmt: skip
