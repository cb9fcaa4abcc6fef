"""Theoretical occupancy by the CUDA occupancy rules, for sm_80 (A100) and sm_90 (H100).

The rules are those of NVIDIA's ``cuda_occupancy.h`` (shipped in the nvidia-cuda-runtime
wheel; ``tests/test_occupancy.py`` checks this module against it): resident blocks per SM are
the least of the warp limit, the block limit, the register limit (registers allocated per warp
in units of 256, warps placed in 4 sub-partitions of 16384 registers each) and the shared
memory limit (static + dynamic + 1 KiB the driver reserves per block, in 128-byte units, out of
the SM's largest carveout, the default when no carveout preference is set). A kernel launched
with more than 48 KiB of dynamic shared memory is assumed to have opted in to it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    name: str
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    registers_per_sm: int = 65536
    registers_per_block: int = 65536
    max_registers_per_thread: int = 255
    register_unit: int = 256  # registers allocated per warp in multiples of this
    sub_partitions: int = 4
    shared_per_sm: int = 164 * 1024  # the largest carveout
    shared_per_block_optin: int = 163 * 1024
    shared_reserved_per_block: int = 1024
    shared_unit: int = 128
    max_threads_per_block: int = 1024
    warp_size: int = 32


ARCH = {
    "sm_80": Architecture("sm_80"),
    "sm_90": Architecture("sm_90", shared_per_sm=228 * 1024, shared_per_block_optin=227 * 1024),
}


@dataclass(frozen=True)
class Occupancy:
    arch: str
    blocks_per_sm: int
    warps_per_sm: int
    #: resident warps over the SM's maximum (64 on sm_80 and sm_90)
    fraction: float
    #: what sets blocks_per_sm: "warps", "blocks", "registers" or "shared memory" (ties: all)
    limiter: str
    limits: dict


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def occupancy(arch: str, threads: int, registers: int, dynamic_shared: int = 0, static_shared: int = 0) -> Occupancy:
    """Theoretical occupancy of a block of ``threads`` threads using ``registers`` registers per
    thread and the given shared memory (bytes) on ``arch``; a block that cannot launch at all
    has 0 blocks per SM."""
    a = ARCH[arch]
    if not 1 <= threads <= a.max_threads_per_block:
        raise ValueError(f"{arch}: a block has 1..{a.max_threads_per_block} threads, got {threads}")
    warps = -(-threads // a.warp_size)
    per_warp = _round_up(registers * a.warp_size, a.register_unit)
    if registers > a.max_registers_per_thread or per_warp * _round_up(warps, a.sub_partitions) > a.registers_per_block:
        by_registers = 0
    else:
        warps_per_partition = (a.registers_per_sm // a.sub_partitions) // per_warp if per_warp else 10**9
        by_registers = warps_per_partition * a.sub_partitions // warps
    shared = _round_up(static_shared + dynamic_shared + a.shared_reserved_per_block, a.shared_unit)
    if static_shared + dynamic_shared > a.shared_per_block_optin:
        by_shared = 0
    else:
        by_shared = a.shared_per_sm // shared
    limits = {
        "warps": a.max_threads_per_sm // a.warp_size // warps,
        "blocks": a.max_blocks_per_sm,
        "registers": by_registers,
        "shared memory": by_shared,
    }
    blocks = min(limits.values())
    limiter = ", ".join(name for name, value in limits.items() if value == blocks)
    max_warps = a.max_threads_per_sm // a.warp_size
    return Occupancy(arch, blocks, blocks * warps, blocks * warps / max_warps, limiter, limits)
