"""The kernels table: ptxas figures of every project ``.cu`` for every target architecture."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from harness.cudac.nvrtc import ARCHITECTURES, compile_cuda
from harness.cudac.source import CudaSource

COLUMNS = {
    "source": "source",
    "kernel": "kernel",
    "arch": "arch",
    "registers": "registers/thread",
    "shared_bytes": "shared memory (B)",
    "constant_bytes": "constant bank 0 (B)",
    "stack_bytes": "stack (B)",
    "spill_stores": "spill stores (B)",
    "spill_loads": "spill loads (B)",
    "barriers": "barriers",
}


def kernel_table(sources: Iterable[Path], archs: Iterable[str] = ARCHITECTURES) -> pd.DataFrame:
    """One row per (source, kernel, architecture), built by NVRTC here (no GPU needed)."""
    rows = []
    for path in sorted(sources):
        source = CudaSource.read(path)
        for arch in archs:
            for figures in compile_cuda(source, arch).figures.values():
                rows.append({"source": path.name, **vars(figures)})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values(["source", "kernel", "arch"], ignore_index=True)


def kernel_table_markdown(frame: pd.DataFrame) -> str:
    shown = frame.astype({"constant_bytes": "Int64"}).astype({"constant_bytes": "string"})
    return shown.fillna({"constant_bytes": "not reported"}).rename(columns=COLUMNS).to_markdown(index=False)
