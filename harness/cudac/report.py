"""The kernels table: ptxas figures of every project ``.cu`` for every target architecture."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from harness.cudac.nvrtc import ARCHITECTURES

COLUMNS = {
    "implementation": "implementation",
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


def kernel_table(implementations: Iterable, archs: Iterable[str] = ARCHITECTURES) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per (implementation, kernel, architecture) of every implementation that
    declares ``kernel_figures``, all built here with no GPU; and, by implementation, the
    errors of those whose kernels did not build (they never stop the others)."""
    rows, errors = [], {}
    for impl in implementations:
        if impl.kernel_figures is None:
            continue
        try:
            rows += [{"implementation": impl.name, **vars(f)} for arch in archs for f in impl.kernel_figures(arch)]
        except Exception as error:  # one implementation's build failure is reported, not fatal
            errors[impl.name] = f"{type(error).__name__}: {error}"
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values(["implementation", "kernel", "arch"], ignore_index=True), errors


def kernel_table_markdown(frame: pd.DataFrame) -> str:
    shown = frame.astype({"constant_bytes": "Int64"}).astype({"constant_bytes": "string"})
    table = shown.fillna({"constant_bytes": "not reported"}).rename(columns=COLUMNS).to_markdown(index=False)
    return table + (
        "\n\nShared memory is what ptxas reports: static allocations. Dynamic shared memory is sized at"
        "\nlaunch from the map size (numba_shared, cupy_fused: staged rows and column tiles, at most 48 KiB per block)."
    )
