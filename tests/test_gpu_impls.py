"""Limits of the GPU designs are refused with the reason, before any launch."""

import sys

import pytest

from harness import ShiftwiseSpec, implementations


def _module(name):
    return sys.modules[implementations()[name].fn.__module__]


def test_fused_refuses_rows_wider_than_shared_memory():
    spec = ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=4, groups=4)
    with pytest.raises(ValueError, match=r"cupy_fused: a 1000-wide row needs \d+ bytes of shared memory, over 49152"):
        _module("cupy_fused").launch_plan(spec, (1, 4, 8, 1000), 4)


@pytest.mark.parametrize("size, itemsize", [(14, 4), (56, 4), (56, 8), (112, 8)])
def test_fused_column_tile_is_the_widest_that_fits(size, itemsize):
    spec = ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=4, groups=4)
    module = _module("cupy_fused")
    plan = module.launch_plan(spec, (1, 4, size, size), itemsize)
    tile, (_, _, shared) = plan["tile"], plan["columns"]
    assert shared <= module.SHARED_LIMIT
    tables = module.move_tables(spec, size, size)
    wider = module._columns_shared_bytes(
        spec, size, tables.columns.shape[1], tables.column_moves.shape[1], 2 * tile, itemsize
    )
    assert tile == 32 or wider > module.SHARED_LIMIT


def test_numba_shared_column_tile_limit():
    module = _module("numba_shared")
    assert module._column_tile(17, 58, 4) == 8
    with pytest.raises(ValueError, match="exceed 49152 bytes of shared memory"):
        module._column_tile(17, 2000, 8)
