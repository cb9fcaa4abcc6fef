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
    see identical code). Written once per (source, defines), atomically."""
    path = Path(path)
    header = "".join(f"#define {name} {int(value)}\n" for name, value in sorted(defines.items()))
    text = f"{header}#line 1 \"{path.name}\"\n{path.read_text()}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    target = _cache_dir() / f"{path.stem}-{digest}.cu"
    if not target.exists():
        scratch = target.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(text)
        os.replace(scratch, target)
    return target


@functools.lru_cache(maxsize=None)
def _cupy_module(path: Path, device_index: int):
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=path.read_text(), options=("-std=c++17",))


def cupy_launcher(path: str | Path, device: torch.device):
    """``launch(kernel, grid, block, *args, shared_bytes=)`` for the kernels of ``path``: the
    host build on the CPU; on a GPU, ``cupy.RawModule`` on torch's current stream with DLPack
    views of tensor arguments (no copies), opting in to more than 48 KiB of dynamic shared
    memory when a launch asks for it."""
    from harness.cudac import CudaSource, load_module

    path = Path(path).resolve()
    if device.type == "cpu":
        module = load_module(path, device)

        def launch(kernel, grid, block, *args, shared_bytes=0):
            # Past 48 KiB the GPU path opts in; the host build grants the same (the sm_80 maximum).
            module.launch(kernel, grid, block, *(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args),
                          shared_bytes=shared_bytes, opt_in=shared_bytes > SHARED_LIMIT)  # fmt: skip

        return launch

    import cupy

    index = device.index if device.index is not None else torch.cuda.current_device()
    module = _cupy_module(path, index)
    signatures = CudaSource.read(path).kernels

    def launch(kernel, grid, block, *args, shared_bytes=0):
        params = signatures[kernel].params
        # Views are taken inside the stream context: DLPack then orders them on torch's stream.
        with cupy.cuda.Device(index), cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream):
            packed = [
                cupy.from_dlpack(a) if isinstance(a, torch.Tensor) else _SCALARS[p.ctype](a) for p, a in zip(params, args)
            ]
            function = module.get_function(kernel)
            if shared_bytes > SHARED_LIMIT:
                function.max_dynamic_shared_size_bytes = shared_bytes
            function(grid, block, tuple(packed), shared_mem=shared_bytes)

    return launch


def max_shared_optin(device: torch.device) -> int:
    """Dynamic shared memory one block of ``device`` may use after opting in: the device's
    maximum on a GPU; in the host emulation, the smallest maximum of the target architectures
    (sm_80's 163 KiB), so a plan that fits there fits every target."""
    if device.type == "cpu":
        from harness.cudac.host import MAX_DYNAMIC_SHARED_OPTIN

        return MAX_DYNAMIC_SHARED_OPTIN
    import cupy

    index = device.index if device.index is not None else torch.cuda.current_device()
    return int(cupy.cuda.Device(index).attributes["MaxSharedMemoryPerBlockOptin"])


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
