"""A CUDA C source file of the project: its kernels' signatures, read from the text.

Kernels must be declared ``extern "C" __global__ void name(params)`` with parameters of the
types in ``PARAM_TYPES`` (one kernel per declaration, no macros generating kernels), so the
same signature drives both the host build's launcher and the GPU launch's argument packing.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

#: C parameter type -> ctypes type used to pass it. Pointers are passed as addresses.
PARAM_TYPES: dict[str, type] = {
    "int": ctypes.c_int32,
    "int32_t": ctypes.c_int32,
    "unsigned": ctypes.c_uint32,
    "unsigned int": ctypes.c_uint32,
    "long long": ctypes.c_int64,
    "int64_t": ctypes.c_int64,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
}

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\([^)]*\)\s+)?void\s+(\w+)\s*\(([^)]*)\)')
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # as written, without qualifiers, e.g. "float*", "long long"
    #: A pointer to const (``const float* x``): the kernel only reads through it.
    const: bool = False

    @property
    def is_pointer(self) -> bool:
        return self.ctype.endswith("*")

    @property
    def ctypes_type(self) -> type:
        return ctypes.c_void_p if self.is_pointer else PARAM_TYPES[self.ctype]


@dataclass(frozen=True)
class KernelSignature:
    name: str
    params: tuple[Param, ...]


@dataclass(frozen=True)
class CudaSource:
    path: Path
    text: str
    kernels: dict[str, KernelSignature]

    @classmethod
    def read(cls, path: str | Path) -> CudaSource:
        """The parsed source; parsed once per file version (availability checks ask often)."""
        path = Path(path).resolve()
        return cls._parse(path, path.stat().st_mtime_ns)

    @classmethod
    @functools.lru_cache(maxsize=None)
    def _parse(cls, path: Path, mtime_ns: int) -> CudaSource:
        text = path.read_text()
        code = _COMMENTS.sub(" ", text)
        kernels = {}
        for match in _KERNEL.finditer(code):
            name, params = match.group(1), match.group(2)
            kernels[name] = KernelSignature(name, tuple(_parse_param(path, name, p) for p in params.split(",") if p.strip()))
        if not kernels:
            raise ValueError(f'{path}: no kernel found; declare kernels as extern "C" __global__ void name(...)')
        return cls(path, text, kernels)

    @property
    def code(self) -> str:
        """The source without comments (what feature checks look at)."""
        return _COMMENTS.sub(" ", self.text)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def _parse_param(path: Path, kernel: str, text: str) -> Param:
    words = text.replace("*", " * ").split()
    pointee_const = "const" in words[: words.index("*")] if "*" in words else False
    words = [w for w in words if w not in ("const", "__restrict__", "volatile")]
    if len(words) < 2:
        raise ValueError(f"{path}: kernel {kernel}: cannot read parameter {text.strip()!r}")
    name, type_words = words[-1], words[:-1]
    pointer = type_words.count("*")
    base = " ".join(w for w in type_words if w != "*")
    if pointer > 1 or (not pointer and base not in PARAM_TYPES):
        raise ValueError(
            f"{path}: kernel {kernel}: parameter {text.strip()!r} has an unsupported type; "
            f"use a single pointer or one of {sorted(PARAM_TYPES)}"
        )
    return Param(name, base + "*" if pointer else base, const=bool(pointer) and pointee_const)
