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

from harness.cudac.device import current_stream_handle
from harness.cudac.host import build_cache_dir
from harness.cudac.modules import source_version
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
    return _specialised(Path(path), source_version(path), tuple(sorted((name, int(value)) for name, value in defines.items())))


@functools.lru_cache(maxsize=256)
def _specialised(path: Path, version: tuple[int, int], defines: tuple[tuple[str, int], ...]) -> Path:
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


def argument_packer(kernel: str, params, device: torch.device) -> Callable[[tuple], tuple]:
    """``pack(args)``: the arguments of one launch of ``kernel`` as the driver takes them, each
    tensor as its address (``data_ptr()``: no DLPack export, so a weight that requires grad, an
    ``nn.Parameter``, is passed like any tensor), each scalar as its C type's numpy scalar. A
    tensor the kernel would misread is refused with its parameter's name: not on ``device``,
    not contiguous (kernels index flat row-major arrays; a silent copy would lose an output's
    writes), or not of the pointee's dtype. What each parameter needs is worked out here, once
    per kernel, so a launch costs one pass over its arguments."""
    index = device.index if device.type == "cuda" else -1  # Tensor.get_device(): -1 on the CPU
    plan = tuple((param.name, param.ctype, param.is_pointer, _POINTEES.get(param.ctype), None if param.is_pointer else _SCALARS[param.ctype])
                 for param in params)  # fmt: skip
    count, uint64, tensor_type = len(plan), np.uint64, torch.Tensor

    def pack(args) -> tuple:
        if len(args) != count:
            raise TypeError(f"kernel {kernel} takes {count} arguments, got {len(args)}")
        packed = []
        for (name, ctype, pointer, expected, scalar), arg in zip(plan, args):
            if not pointer:
                packed.append(scalar(arg))
                continue
            if not isinstance(arg, tensor_type):
                raise TypeError(f"kernel {kernel}: {name} ({ctype}) expects a tensor, got {type(arg).__name__}")
            if arg.get_device() != index:
                raise ValueError(f"kernel {kernel}: {name} must be on {device}, got a tensor on {arg.device}")
            if not arg.is_contiguous():
                raise ValueError(
                    f"kernel {kernel}: {name} must be contiguous (the kernel indexes it as a flat row-major array), "
                    f"got strides {tuple(arg.stride())} for shape {tuple(arg.shape)}"
                )
            if expected is not None and arg.dtype != expected:
                raise TypeError(f"kernel {kernel}: {name} ({ctype}) expects {expected}, got {arg.dtype}")
            packed.append(uint64(arg.data_ptr()))  # a device address: 8 bytes, as the pointer parameter
        return tuple(packed)

    return pack


def kernel_arguments(kernel: str, params, args, device: torch.device) -> list:
    """``argument_packer(kernel, params, device)(args)`` as a list (its checks and packing)."""
    return list(argument_packer(kernel, params, device)(args))


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
    stream is current at the launch), tensors passed by address (``argument_packer``),
    opting in to more than 48 KiB of dynamic shared memory when a launch asks for it. Made
    once per (file, device, file version: ``source_version``, so an edited ``.cu`` is rebuilt):
    a launch costs the argument packing and the driver call."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", _device_index(device))
    return _launcher(Path(path), device, source_version(path))


#: Most CuPy stream views a GPU launcher keeps (one per torch stream it has launched on).
MAX_STREAM_VIEWS = 64


@functools.lru_cache(maxsize=256)
def _launcher(path: Path, device: torch.device, version: tuple[int, int]):
    from harness.cudac.modules import load_module
    from harness.cudac.source import CudaSource

    path = path.resolve()
    signatures = CudaSource.read(path).kernels
    packers: dict[str, Callable[[tuple], tuple]] = {}

    def packer(kernel: str) -> Callable[[tuple], tuple]:
        found = packers.get(kernel)
        if found is None:
            found = packers[kernel] = argument_packer(kernel, signatures[kernel].params, device)
        return found

    if device.type == "cpu":
        module = load_module(path, device)

        def launch(kernel, grid, block, *args, shared_bytes=0):
            packed = packer(kernel)(args)
            # Past 48 KiB the GPU path opts in; the host build grants the same (the sm_80 maximum).
            module.launch(kernel, grid, block, *(a.item() for a in packed), shared_bytes=shared_bytes,
                          opt_in=shared_bytes > SHARED_LIMIT)  # fmt: skip

        return launch

    import cupy

    index = device.index
    module = _cupy_module(path, index, version)
    runtime = cupy.cuda.runtime
    functions: dict[tuple[str, int], object] = {}  # (kernel, opted-in shared bytes) -> cupy.RawKernel
    streams: dict[int, object] = {}  # torch's raw stream handle -> a (non-owning) cupy.cuda.ExternalStream of it

    def function_for(kernel: str, shared_bytes: int):
        key = (kernel, shared_bytes if shared_bytes > SHARED_LIMIT else 0)
        function = functions.get(key)
        if function is None:
            with cupy.cuda.Device(index):
                function = module.get_function(kernel)
                if key[1]:
                    function.max_dynamic_shared_size_bytes = shared_bytes
            functions[key] = function
        return function

    def stream_of(handle: int):
        stream = streams.get(handle)
        if stream is None:
            if len(streams) >= MAX_STREAM_VIEWS:
                streams.clear()
            stream = streams[handle] = cupy.cuda.ExternalStream(handle, index)
        return stream

    def launch(kernel, grid, block, *args, shared_bytes=0):
        packed = packer(kernel)(args)
        function = function_for(kernel, shared_bytes)
        stream = stream_of(current_stream_handle(index))  # torch's current stream at this launch
        if runtime.getDevice() == index:  # the usual case: no device switch around the launch
            function(grid, block, packed, shared_mem=shared_bytes, stream=stream)
        else:
            with cupy.cuda.Device(index):
                function(grid, block, packed, shared_mem=shared_bytes, stream=stream)

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
