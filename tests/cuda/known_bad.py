"""How each kernel of known_bad.cu is launched, what a correct kernel would write, and what
must catch its bug in each mode of the host emulation.

Run as a script (``python -m harness.cudac.sanitizers thread run tests/cuda/known_bad.py``)
it launches every kernel once in this process, under whatever build the process gets, and
prints one ``SWEMU-BAD {json}`` line per kernel: the error raised (type and message) or none,
and whether the output matched the bug-free result. Then, for each ``--check IMPL CASE`` pair
it was given, it checks that implementation on that case string in the same process
(``harness.cudac.sanitizers.run_checks``): one sanitized process does both.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "known_bad.cu"
WARP_SOURCE = HERE / "known_bad_warp.cu"
PREFIX = "SWEMU-BAD "


@dataclass(frozen=True)
class Bad:
    kernel: str
    #: What must catch it: a regex the error's message must match, per mode (``schedules``:
    #: the fast build under forward, reverse and shuffle; ``thread``, ``address``: the
    #: sanitized builds); None: that mode does not see this bug (docs/cuda-kernels.md). The
    #: TSan build keeps the fast build's guard bytes, which catch writes past the end.
    schedules: str | None
    thread: str | None
    address: str | None
    #: In the fast build's default (forward) schedule: None when it passes silently there.
    fast: str | None = None


KNOWN_BAD = [
    Bad("neighbour_without_barrier", schedules=r"schedule dependence: thread order reverse",
        thread=r"ThreadSanitizer: data race on shared memory at known_bad\.cu:1[13]", address=None),
    Bad("tile_loop_missing_second_barrier", schedules=r"schedule dependence: thread order reverse",
        thread=r"ThreadSanitizer: data race on shared memory at known_bad\.cu:2[2-7]", address=None),
    Bad("nonatomic_block_sum", schedules=None,
        thread=r"ThreadSanitizer: data race on global memory at known_bad\.cu:34", address=None),
    Bad("dynamic_shared_one_past_end", schedules=r"out-of-bounds shared memory: a write outside dynamic shared",
        thread=r"out-of-bounds shared memory: a write outside dynamic shared memory \(128 bytes\)", address=r"AddressSanitizer: out-of-bounds shared memory access \(heap-buffer-overflow\) at known_bad\.cu:42",
        fast=r"out-of-bounds shared memory: a write outside dynamic shared memory \(128 bytes\)"),
    Bad("static_shared_one_past_end", schedules=r"out-of-bounds shared memory: a write outside a static __shared__",
        thread=r"out-of-bounds shared memory: a write outside a static __shared__ array", address=r"AddressSanitizer: out-of-bounds shared memory access \(heap-buffer-overflow\) at known_bad\.cu:51",
        fast=r"out-of-bounds shared memory: a write outside a static __shared__ array \(declaration \d+, 128 bytes\)"),
    Bad("warp_reduce_without_syncwarp", schedules=r"schedule dependence: thread order reverse",
        thread=r"ThreadSanitizer: data race on shared memory at known_bad\.cu:(6[6-9]|7[01])", address=None),
]  # fmt: skip
BLOCKS, THREADS = 3, 32


def _inputs(kernel: str) -> tuple[tuple, dict, list[torch.Tensor], torch.Tensor]:
    """(launch args after the grid and block, launch keywords, tensors kept alive, the output)."""
    generator = torch.Generator().manual_seed(5)
    if kernel == "tile_loop_missing_second_barrier":
        tiles = 4
        x = torch.randint(-8, 9, (BLOCKS * tiles * THREADS,), generator=generator).float()
        out = torch.zeros(BLOCKS)
        return (x.data_ptr(), tiles, out.data_ptr()), {}, [x, out], out
    threads = 64 if kernel in ("neighbour_without_barrier", "warp_reduce_without_syncwarp") else THREADS
    x = torch.randint(-8, 9, (BLOCKS * threads,), generator=generator).float()
    out = torch.zeros(BLOCKS if kernel in ("nonatomic_block_sum", "warp_reduce_without_syncwarp") else BLOCKS * threads)
    keywords = {"shared_bytes": 4 * threads} if kernel == "dynamic_shared_one_past_end" else {}
    return (x.data_ptr(), out.data_ptr()), keywords, [x, out], out


def block_size(kernel: str) -> int:
    return 64 if kernel in ("neighbour_without_barrier", "warp_reduce_without_syncwarp") else THREADS


def expected(kernel: str, x: torch.Tensor) -> torch.Tensor:
    """What the kernel would write without its bug."""
    threads = block_size(kernel)
    if kernel == "tile_loop_missing_second_barrier":
        return x.view(BLOCKS, -1).sum(dim=1)
    if kernel in ("nonatomic_block_sum", "warp_reduce_without_syncwarp"):
        return x.view(BLOCKS, threads).sum(dim=1)
    shifted = torch.zeros(BLOCKS, threads)
    shifted[:, 1:] = x.view(BLOCKS, threads)[:, :-1]
    return shifted.reshape(-1)


def launch(module, kernel: str) -> tuple[Exception | None, bool]:
    """Launch ``kernel`` of ``module``; (the error it raised or None, whether it wrote the
    bug-free result)."""
    args, keywords, tensors, out = _inputs(kernel)
    try:
        module.launch(kernel, (BLOCKS,), (block_size(kernel),), *args, **keywords)
    except Exception as error:  # the finding itself
        return error, False
    return None, torch.equal(out, expected(kernel, tensors[0]))


def _probe(module, kernel: str) -> bool:
    """Launch a correct kernel of emulation_probes.cu; whether it wrote the right result."""
    generator = torch.Generator().manual_seed(3)
    if kernel == "write_ids":
        out = torch.full((2 * 3 * 24,), -1, dtype=torch.int64)
        module.launch(kernel, (2, 3), (4, 2, 3), out.data_ptr())
        return torch.equal(out, torch.arange(out.numel()))
    if kernel == "histogram":
        values = torch.randint(0, 1000, (4096,), dtype=torch.int32, generator=generator)
        bins = torch.zeros(7, dtype=torch.int32)
        module.launch(kernel, (32,), (128,), values.data_ptr(), values.numel(), bins.data_ptr(), 7)
        return torch.equal(bins.long(), torch.bincount(values.long() % 7, minlength=7))
    if kernel == "block_sums":
        x = torch.randint(-50, 50, (3 * 256,), generator=generator).float()
        sums = torch.zeros(3)
        module.launch(kernel, (3,), (256,), x.data_ptr(), sums.data_ptr())
        return torch.equal(sums, x.view(3, 256).sum(dim=1))
    if kernel == "block_sums_dynamic":
        x = torch.randint(-50, 50, (3 * 64,), generator=generator).double()
        sums = torch.zeros(3, dtype=torch.float64)
        module.launch(kernel, (3,), (64,), x.data_ptr(), sums.data_ptr(), shared_bytes=64 * 8)
        return torch.equal(sums, x.view(3, 64).sum(dim=1))
    if kernel == "divergent_barrier":
        x = torch.zeros(64)
        module.launch(kernel, (2,), (32,), x.data_ptr())
        return True
    raise KeyError(kernel)


#: Correct kernels (and one invalid one) of emulation_probes.cu, which must run clean.
PROBES = HERE / "emulation_probes.cu"
PROBE_KERNELS = ("write_ids", "histogram", "block_sums", "block_sums_dynamic", "divergent_barrier")


def _record(kernel: str, run) -> dict:
    try:
        error, correct = run()
    except Exception as raised:  # the finding itself
        error, correct = raised, False
    record = {"kernel": kernel, "error": type(error).__name__ if error else None,
              "message": str(error) if error else None, "correct": correct}  # fmt: skip
    if error is not None and hasattr(error, "report"):
        record["report"] = error.report.text[:4000]
    return record


def main(argv: list[str]) -> int:
    from harness.cudac import load_module

    torch.set_num_threads(1)
    module = load_module(SOURCE, "cpu")
    for bad in KNOWN_BAD:
        print(PREFIX + json.dumps(_record(bad.kernel, lambda: launch(module, bad.kernel))), flush=True)
    probes = load_module(PROBES, "cpu")
    for kernel in PROBE_KERNELS:
        print(PREFIX + json.dumps(_record(kernel, lambda: (None, _probe(probes, kernel)))), flush=True)
    if not argv:
        return 0
    import os

    from harness.cudac.sanitizers import run_checks

    if len(argv) % 3 or any(flag != "--check" for flag in argv[::3]):
        raise SystemExit(f"usage: known_bad.py [--check IMPL CASE]..., got {argv}")
    return run_checks(os.environ["SW_HOST_SANITIZER"], list(zip(argv[1::3], argv[2::3])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
