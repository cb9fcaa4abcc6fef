"""Atomic file writes: a reader never sees a half-written report or table, a failed or
interrupted write leaves the earlier file as it was, and a write that must not replace a file
cannot, even when another process creates it at the same moment."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace_atomically(path: Path, write: Callable[[BinaryIO], object], *, overwrite: bool = True) -> None:
    """Write through ``write(handle)`` to a temporary file beside ``path``, then move it into
    place: over ``path`` with ``overwrite``, else only if ``path`` does not exist (a hard link,
    which fails with FileExistsError if another writer got there first). On failure the
    temporary file is removed and ``path`` is left as it was. The file gets the umask's
    permissions (a temporary file's own are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
        os.chmod(handle.name, 0o666 & ~_umask())
        if overwrite:
            os.replace(handle.name, path)
        else:
            try:
                os.link(handle.name, path)
            except FileExistsError:
                raise FileExistsError(f"{path} exists (written by another run meanwhile?); pass --overwrite to replace it") from None
            os.unlink(handle.name)
    except BaseException:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
        raise


def write_text_atomically(path: Path, text: str, *, overwrite: bool = True) -> None:
    replace_atomically(path, lambda handle: handle.write(text.encode()), overwrite=overwrite)


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (resolved; hard links and symlinks included)."""
    first, second = Path(first), Path(second)
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()
