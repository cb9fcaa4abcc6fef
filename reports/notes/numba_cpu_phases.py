"""Where numba_cpu's time goes on the SW-tiny stages at batch 4 (fp32): the whole operator, then
each stage alone (the other branches' move counts set to zero), then no work at all (fixed cost).

Run from the repository root: ``.venv/bin/python reports/notes/numba_cpu_phases.py``.
Prints median milliseconds of 40 calls per variant. It uses numba_cpu's internals on purpose.
"""

import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from harness import ShiftwiseSpec  # noqa: E402

spec_ = importlib.util.spec_from_file_location("numba_cpu", ROOT / "impls" / "numba_cpu.py")
nc = importlib.util.module_from_spec(spec_)
sys.modules["numba_cpu"] = nc
spec_.loader.exec_module(nc)
op = nc._compiled()


def median_ms(fn, calls=40):
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


for channels, size, big, batch in [(60, 56, 51, 4), (122, 28, 49, 4), (246, 14, 47, 4), (492, 7, 13, 4)]:
    spec = ShiftwiseSpec.official(big_kernel=big, small_kernel=3, channels=channels, groups=4)
    x, w = torch.randn(batch, channels, size, size), torch.randn(spec.weight_shape)
    tables = nc._tables(spec, size, size)
    layout = nc._layout(spec, tables, size, size, 4)
    small = w.reshape(channels, spec.nk, 9).numpy()
    staged_weights = np.take_along_axis(small, tables.staged[:, :, None].astype(np.int64), axis=1)
    staged_weights = np.ascontiguousarray(staged_weights).reshape(-1)
    buffers = nc._scratch_buffers(layout, np.float32, numba.get_num_threads())
    outputs = [np.empty(x.shape, np.float32) for _ in range(3)]
    none = np.zeros_like(tables.n_h)

    def variant(staged=tables.n_staged, h=tables.n_h, v=tables.n_v, i=tables.n_i):
        return lambda: op(
            x.numpy(), staged_weights, tables.staged, staged, tables.h_moves, h, tables.v_moves, v,
            tables.i_moves, i, tables.left, 9, layout.lanes, layout.conv_vectors, layout.out_vectors,
            layout.x_stride, layout.y_stride, layout.plane, *buffers, *outputs,
        )  # fmt: skip

    variants = {
        "all": variant(), "conv": variant(h=none, v=none, i=none), "h": variant(staged=none, v=none, i=none),
        "v": variant(staged=none, h=none, i=none), "i": variant(staged=none, h=none, v=none),
        "fixed": variant(none, none, none, none),
    }  # fmt: skip
    print(f"C={channels} {size}x{size} M={big} B={batch}:",
          {name: round(median_ms(fn), 3) for name, fn in variants.items()})  # fmt: skip
