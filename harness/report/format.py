"""Cell formatting shared by the report's tables and plots: fixed significant digits, one
missing-value mark, markdown tables with escaped pipes (the same input, the same bytes)."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable

import pandas as pd

MISSING = "—"


def number(value: object, digits: int = 3) -> str:
    """``digits`` significant digits in plain notation (no exponent), thousands separated; ints as they are."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, numbers.Integral):
        return str(value)
    if value == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:,.{decimals}f}"


def table(frame: pd.DataFrame, numeric: Iterable[str] = ()) -> str:
    """Markdown table of already formatted cells; numeric columns right-aligned, pipes escaped."""
    if frame.empty:
        return "none"
    shown = frame.astype(object).where(frame.notna(), MISSING).map(lambda v: str(v).replace("|", "\\|"))
    align = ["right" if column in set(numeric) else "left" for column in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def safe(name: str) -> str:
    """A file-name-safe form of a label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


#: Marks a figure above 100% of the roofline (see ABOVE_ROOF_NOTE).
ABOVE_ROOF = "†"
ABOVE_ROOF_NOTE = (
    f"{ABOVE_ROOF}: above 100% of the roofline, which no computation can be: the run's probed peak is below what "
    "this computation reached (a probe made while the machine was loaded reads low). Its % of roofline is not "
    "meaningful; rerun on an idle machine or pass the peaks (--peak-gflops, --peak-gbps)."
)


def pct_roofline(value: object) -> str:
    """% of roofline, flagged when above 100."""
    text = number(value)
    if isinstance(value, float) and math.isfinite(value) and value > 100.0:
        return f"{text} {ABOVE_ROOF}"
    return text
