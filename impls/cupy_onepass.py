"""The whole SW operator in one kernel and one pass (``cupy_onepass.cu``), run by CuPy.

A block stages its (b, c) planes with their halo in shared memory once; for each active
small kernel j with an in-map move it computes y_j once into shared memory and gathers all
three branches from it into register accumulators; each output is written once, with no
atomics, and y never reaches DRAM (appendix B.2-B.4). Pruned kernels and wholly off-map
slots are skipped through ``harness.moves``. The small kernel size, the conv's register
tile and the outputs per thread are compile-time constants: one build per configuration
(``harness.cudac.specialise``), cached. On a GPU the build is NVRTC through
``cupy.RawModule`` on torch's current stream; on the CPU the same specialised source runs
as a host build (``harness.cudac``), which is how CI checks it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness import Branches, Computes, Execution, Implementation, ShiftwiseSpec, compulsory_bytes, cudac, move_tables, scatter_moves

KERNEL_SOURCE = Path(__file__).with_suffix(".cu")
#: Most threads per plane (the outputs of a column are split over rows of threads), and the
#: threads a block aims at when it holds several small planes: 16 warps, 2 blocks per SM at
#: up to 64 registers (warp counts that are not a multiple of 4 waste sub-partition registers).
MAX_LANES = 512
TARGET_THREADS = 512
#: Resident warps per SM the launch bounds ask registers to allow (50% of sm_80/sm_90's 64).
TARGET_WARPS = 32
#: Most outputs (of one column) per thread: 2 register accumulators each.
MAX_OUTPUTS = 16


@dataclass(frozen=True)
class Plan:
    """One launch: compile-time constants, block (lanes per plane, planes), grid, shared memory."""

    defines: dict
    lanes: int
    planes_per_block: int
    grid: int
    shared_bytes: int
    entries: int

    @property
    def block(self) -> tuple[int, int]:
        return (self.lanes, self.planes_per_block)


def _tile(extent: int) -> int:
    """The conv's register tile along an axis: 2 or 3 when it divides the extent, else 1."""
    return next(t for t in (2, 3, 1) if extent % t == 0)


@functools.lru_cache(maxsize=128)
def entry_table(spec: ShiftwiseSpec, height: int, width: int) -> np.ndarray:
    """(C, R, 4 + 2E) int32: per channel, each kernel j with an in-map move (active ones only),
    as [j, nh, nv, ni, horizontal shifts (E), vertical shifts (E)], -1 padded."""
    tables = move_tables(spec, height, width)
    groups, entries = spec.groups, []
    for c in range(spec.channels):
        moves: dict[int, tuple[list, list, int]] = {}
        for r, shift in tables.row_moves[c]:
            if r >= 0:
                moves.setdefault(int(tables.rows[c, r]), ([], [], 0))[0].append(int(shift))
        for r, shift in tables.column_moves[c]:
            if r >= 0:
                moves.setdefault(int(tables.columns[c, r]), ([], [], 0))[1].append(int(shift))
        for kernel in tables.identity[c]:
            if kernel >= 0:
                h, v, n = moves.setdefault(int(kernel) - c * spec.nk, ([], [], 0))
                moves[int(kernel) - c * spec.nk] = (h, v, n + 1)
        entries.append([[j, len(h), len(v), n, *(h + [0] * (groups - len(h))), *(v + [0] * (groups - len(v)))]
                        for j, (h, v, n) in sorted(moves.items())])  # fmt: skip
    table = np.full((spec.channels, max(1, max(map(len, entries))), 4 + 2 * groups), -1, dtype=np.int32)
    for c, rows in enumerate(entries):
        if rows:
            table[c, : len(rows)] = rows
    return table


def launch_plan(spec: ShiftwiseSpec, shape, itemsize: int, shared_limit: int = cudac.SHARED_LIMIT) -> Plan:
    """The launch for input ``shape``, or a ValueError naming the limit it would exceed."""
    batch, channels, height, width = shape
    k, e, p = spec.small_kernel, spec.extra_pad, spec.small_kernel - 1
    hy, wy = height + 2 * e, width + 2 * e
    rx, ry = _tile(wy), _tile(hy)
    if height * width <= MAX_LANES and rx != ry:  # small maps: one square tile, fewer builds
        rx = ry = 1
    if height * width <= MAX_LANES:  # a thread per output; small planes share a block
        lanes, outputs = max(height * width, wy // rx), 1
    else:  # rows of MAX_LANES // W threads, each thread a few outputs of its column
        lanes = max(MAX_LANES, 32 * -(-width // 32))
        outputs = -(-height // (lanes // width))
    if outputs > MAX_OUTPUTS or lanes > 1024:
        raise ValueError(f"cupy_onepass: a {height}x{width} map needs more than {MAX_OUTPUTS} outputs per thread")
    entries = entry_table(spec, height, width).shape[1]
    plane_bytes = itemsize * ((height + 2 * p) * (width + 2 * p) + hy * wy + height * width) + 4 * entries * (4 + 2 * spec.groups)
    if plane_bytes > shared_limit:
        raise ValueError(f"cupy_onepass: a {height}x{width} plane needs {plane_bytes} bytes of shared memory, over {shared_limit}")
    planes = batch * channels
    per_block = max(1, min(TARGET_THREADS // lanes, shared_limit // plane_bytes, 1024 // lanes, planes))
    # Launch bounds: the block in whole warps, and as many resident blocks as TARGET_WARPS need
    # (a looser bound, e.g. a power-of-two block, caps registers lower: stage 3 then spills).
    warps = -(-(lanes * per_block) // 32)
    bound, min_blocks = 32 * warps, -(-TARGET_WARPS // warps)
    exact = int(lanes // width * outputs == height)
    defines = {"SW_K": k, "SW_RX": rx, "SW_RY": ry, "SW_OUT": outputs, "SW_EXACT": exact,
               "SW_THREADS": bound, "SW_MIN_BLOCKS": min_blocks, "SW_MAP": int(outputs > 1)}  # fmt: skip
    if outputs > 1:  # a thread owns several outputs: strides as constants (a build per map size)
        defines.update(SW_H=height, SW_W=width, SW_LANES=lanes)
    return Plan(defines, lanes, per_block, -(-planes // per_block), per_block * plane_bytes, entries)


@functools.lru_cache(maxsize=64)
def _device_table(spec: ShiftwiseSpec, height: int, width: int, device: torch.device) -> torch.Tensor:
    return torch.tensor(entry_table(spec, height, width), device=device).contiguous()


@functools.lru_cache(maxsize=256)
def _prepared(spec: ShiftwiseSpec, shape: torch.Size, dtype: torch.dtype, device: torch.device, version: tuple[int, int]):
    """(launch, kernel name, grid, block, shared bytes, entry table, the kernel's scalar
    arguments) for one configuration, device and version of the ``.cu`` (``source_version``:
    an edited file is specialised and built again), made once: the plan, the device's
    shared-memory limit, the specialised source, its launcher and the table are host work a
    call must not repeat (at SW-tiny stages 3-4 it would be about the kernel's own time)."""
    batch, channels, height, width = shape
    plan = launch_plan(spec, shape, torch.empty((), dtype=dtype).element_size(), cudac.max_shared_optin(device))
    defines = plan.defines
    if device.type == "cpu":  # the host build ignores __launch_bounds__: one build serves every bound
        defines = {**defines, "SW_THREADS": 1024, "SW_MIN_BLOCKS": 1}
    launch = cudac.cupy_launcher(cudac.specialise(KERNEL_SOURCE, defines), device)
    scalars = (batch * channels, channels, spec.nk, height, width, spec.groups, plan.entries)
    return (launch, f"sw_onepass_{cudac.dtype_suffix(dtype)}", (plan.grid,), plan.block, plan.shared_bytes,
            _device_table(spec, height, width, device), scalars)  # fmt: skip


def forward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    x, weight = x.contiguous(), weight.contiguous()
    launch, kernel, grid, block, shared_bytes, table, scalars = _prepared(
        spec, x.shape, x.dtype, x.device, cudac.source_version(KERNEL_SOURCE))
    out_h, out_v, out_i = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    launch(kernel, grid, block, x, weight, out_h, out_v, out_i, table, *scalars, shared_bytes=shared_bytes)
    return Branches(out_h, out_v, out_i)


def executed_flops(spec: ShiftwiseSpec, shape) -> tuple[int, int]:
    """(multiply-adds, additions) the kernel executes: the conv of every staged kernel over the
    whole (H+2e) x (W+2e) plane, one addition per in-map move (the same count as the scatter's
    ``scatter_moves``)."""
    batch, _, height, width = shape
    e, k = spec.extra_pad, spec.small_kernel
    staged = int((entry_table(spec, height, width)[:, :, 0] >= 0).sum())
    return batch * staged * k * k * (height + 2 * e) * (width + 2 * e), scatter_moves(spec, shape)


def shared_sites(spec: ShiftwiseSpec, shape, plan: Plan, conv_width: tuple[int, int] = (4, 4)) -> list:
    """Every shared-memory access of ``cupy_onepass.cu`` over one launch, its index expressions
    replayed for the 32 lanes of each warp (``harness.cudac.banks``). ``conv_width``: the bytes
    per lane of the conv's loads and stores in the build's SASS (8 where it pairs them). Every
    block is replayed with the table of one channel for all its planes, and the grid's blocks
    spread evenly over the channels; lanes of a warp run in lockstep (a lane whose guard fails
    is inactive)."""
    banks = cudac.banks

    batch, channels, height, width = shape
    k, e, pad, groups = spec.small_kernel, spec.extra_pad, spec.small_kernel - 1, spec.groups
    d = plan.defines
    rx, ry, outputs, exact = d["SW_RX"], d["SW_RY"], d["SW_OUT"], d["SW_EXACT"]
    lanes, planes = plan.lanes, plan.planes_per_block
    wx, hx, wy, hy = width + 2 * pad, height + 2 * pad, width + 2 * e, height + 2 * e
    plane_x, plane_y, entry = hx * wx, hy * wy, 4 + 2 * groups
    table = entry_table(spec, height, width)
    entries = table.shape[1]
    threads = lanes * planes
    tid, valid = banks.warps_of(threads)
    lane, slot = tid % lanes, tid // lanes
    # Word offsets of the dynamic shared memory's parts (float32 and int32 are both 4 bytes).
    xs0, ys0 = 0, planes * plane_x
    oi0 = ys0 + planes * plane_y
    tab0 = oi0 + planes * height * width
    per_channel = plan.grid / channels  # blocks replayed with each channel's table

    def at(words, active):
        return np.where(active, 4 * words, -1).reshape(-1, 32)

    sites = []
    for name, start, total in (("stage x", xs0, planes * plane_x), ("zero identity sums", oi0, planes * height * width),
                               ("stage table", tab0, planes * entries * entry)):  # fmt: skip
        t, active = banks.strided(tid, valid, total, threads)
        sites.append(banks.site(name, "st", at(start + t, active), plan.grid))
    my_table = tab0 + slot * entries * entry
    sites.append(banks.site("table: kernel j", "ld", at(my_table + 0 * tid, valid), plan.grid * entries))

    # Conv: lane -> tile (gy0, gx); every staged entry runs the same tiles.
    staged = int((table[:, :, 0] >= 0).sum())
    gcols, grows = wy // rx, hy // ry
    conv_rows = lanes // gcols
    gx, gy0 = lane % gcols, lane // gcols
    load_width, store_width = conv_width
    for it in range(-(-grows // conv_rows)):
        gy = gy0 + it * conv_rows
        active = valid & (gy0 < conv_rows) & (gy < grows)
        base = xs0 + slot * plane_x + gy * ry * wx + gx * rx
        for row in range(ry + k - 1):
            for col in range(0, rx + k - 1, load_width // 4):
                sites.append(banks.site("conv: x", "ld", at(base + row * wx + col, active), per_channel * staged, load_width))
        out = ys0 + slot * plane_y + gy * ry * wy + gx * rx
        for dy in range(ry):
            for dx in range(0, rx, store_width // 4):
                sites.append(banks.site("conv: y", "st", at(out + dy * wy + dx, active), per_channel * staged, store_width))

    # Gather: lane -> column ox, rows oy0 + n * step.
    step = lanes // width
    ox, oy0 = lane % width, lane // width
    gathers = valid & (lane < step * width)
    rows_ok = [gathers & (bool(exact) or (n + 1) * step <= height or (oy0 + n * step < height)) for n in range(outputs)]
    ys_mine = ys0 + slot * plane_y
    live = table[:, :, 0] >= 0
    counts = {name: int(table[:, :, col][live].sum()) for name, col in (("h", 1), ("v", 2), ("i", 3))}
    sites.append(banks.site("table: counts", "ld", at(my_table + 1 + 0 * tid, gathers), per_channel * staged * 3))
    sites.append(banks.site("table: shifts", "ld", at(my_table + 4 + 0 * tid, gathers), per_channel * (counts["h"] + counts["v"])))
    for branch, column, count in (("h", 1, 4), ("v", 2, 4 + groups)):
        shifts: dict[int, int] = {}
        for c, r in zip(*np.nonzero(live)):
            for g in range(int(table[c, r, column])):
                shift = int(table[c, r, count + g])
                shifts[shift] = shifts.get(shift, 0) + 1
        for shift, times in shifts.items():
            for n in range(outputs):
                if branch == "h":
                    q = ox - shift
                    words, active = ys_mine + (oy0 + e) * wy + q + n * step * wy, rows_ok[n] & (q >= 0) & (q < wy)
                else:
                    a = oy0 - shift + n * step
                    words, active = ys_mine + a * wy + ox + e, rows_ok[n] & (a >= 0) & (a < hy)
                sites.append(banks.site(f"gather {branch}: y", "ld", at(words, active), per_channel * times))
    own, centre = oi0 + slot * height * width + oy0 * width + ox, ys_mine + (oy0 + e) * wy + ox + e
    for n in range(outputs):
        picks = per_channel * counts["i"]
        sites.append(banks.site("gather i: y", "ld", at(centre + n * step * wy, rows_ok[n]), picks))
        sites.append(banks.site("gather i: sums", "ld", at(own + n * step * width, rows_ok[n]), picks))
        sites.append(banks.site("gather i: sums", "st", at(own + n * step * width, rows_ok[n]), picks))
        sites.append(banks.site("write: identity sums", "ld", at(own + n * step * width, rows_ok[n]), plan.grid))
    return banks.merge(sites)


def traffic(spec: ShiftwiseSpec, shape, itemsize: int) -> int:
    """Compulsory bytes with this kernel's own table in place of the official ones: x read once
    (each block stages its planes), the three outputs written once; the weights and the table
    (a few KiB per channel, re-read by every block from L2) are counted once."""
    batch, channels, height, width = shape
    official_tables = 4 * (channels * spec.nk * 2 * spec.groups + channels * spec.groups) + channels * spec.nk
    return compulsory_bytes(spec, shape, itemsize) - official_tables + entry_table(spec, height, width).nbytes


def _execution(device: torch.device) -> Execution:
    return cudac.cupy_execution(KERNEL_SOURCE, device)


def kernel_figures(arch: str) -> list:
    """The float32 kernel as built and launched for each SW-tiny stage (one build per stage),
    with its launch and the work it executes there."""

    figures = []
    for case, spec, shape in cudac.report_stages():
        plan = launch_plan(spec, shape, 4, cudac.ARCH_LIMITS[arch].shared_per_block_optin)
        compiled = cudac.compile_cuda(cudac.CudaSource.read(cudac.specialise(KERNEL_SOURCE, plan.defines)), arch)
        sass = cudac.kernel_sass(compiled.cubin)["sw_onepass_f32"]
        hot = sass.hot_loop  # the conv: its loads and stores may be paired (LDS.64)
        widths = (sass.access_widths(hot, "LDS"), sass.access_widths(hot, "STS")) if hot else (4, 4)
        fma, adds = executed_flops(spec, shape)
        launch = cudac.Launch(case, plan.grid, plan.block, plan.shared_bytes, fma, adds,
                              shared_sites=tuple(shared_sites(spec, shape, plan, widths)),
                              barriers_per_block=1 + 2 * plan.entries, dram_bytes=traffic(spec, shape, 4))  # fmt: skip
        build = f"{case.split('-b')[0]}: " + " ".join(f"{k.removeprefix('SW_')}={v}" for k, v in plan.defines.items())
        figures.append(cudac.with_sass(compiled.figures["sw_onepass_f32"], sass, [launch], build))
    return figures


IMPLEMENTATION = Implementation(
    name="cupy_onepass",
    fn=forward,
    computes=Computes.OPERATOR,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    description="one kernel, one pass: planes staged once, each y_j computed once in shared memory and gathered into all three branches",
    execution=_execution,
    traffic=traffic,
    kernel_figures=kernel_figures,
)
