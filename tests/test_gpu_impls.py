"""Limits of the GPU designs are refused with the reason, before any launch; their launch plans
(the modules' public planning functions, which run without a GPU)."""

import inspect

import pytest

from harness import ShiftwiseSpec, implementations


def _module(name):
    """The module an implementation was loaded from (the registry loads ``impls/`` by path)."""
    return inspect.getmodule(implementations()[name].fn)


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
    wider = module.columns_shared_bytes(
        spec, size, tables.columns.shape[1], tables.column_moves.shape[1], 2 * tile, itemsize
    )
    assert tile == 32 or wider > module.SHARED_LIMIT


def test_numba_shared_column_tile_limit():
    module = _module("numba_shared")
    assert module.column_tile(17, 58, 4) == 8
    with pytest.raises(ValueError, match="exceed 49152 bytes of shared memory"):
        module.column_tile(17, 2000, 8)


def test_onepass_entry_table_matches_the_move_tables():
    spec = ShiftwiseSpec.random(big_kernel=13, small_kernel=3, channels=5, groups=3, seed=3, sparsity=0.4)
    module = _module("cupy_onepass")
    table = module.entry_table(spec, 9, 11)
    tables = module.move_tables(spec, 9, 11)
    rows = table[table[..., 0] >= 0]
    assert (rows[:, 1:4] <= spec.groups).all()  # at most one move per group and branch
    assert int(rows[:, 1].sum()) == int((tables.row_moves[..., 0] >= 0).sum())
    assert int(rows[:, 2].sum()) == int((tables.column_moves[..., 0] >= 0).sum())
    assert int(rows[:, 3].sum()) == int((tables.identity >= 0).sum())
    for c, j in zip(*((table[..., 0] >= 0).nonzero())):
        assert spec.active[c, table[c, j, 0]]  # pruned kernels are never staged


def test_onepass_refuses_planes_larger_than_shared_memory():
    spec = ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=4, groups=4)
    with pytest.raises(ValueError, match=r"cupy_onepass: a 56x56 plane needs \d+ bytes of shared memory, over 49152"):
        _module("cupy_onepass").launch_plan(spec, (1, 4, 56, 56), 8)
    with pytest.raises(ValueError, match="more than 16 outputs per thread"):
        _module("cupy_onepass").launch_plan(spec, (1, 4, 200, 200), 4, 10**7)


@pytest.mark.parametrize("size, planes", [(56, 1), (28, 1), (14, 2), (7, 10), (3, 24)])
def test_onepass_plan_covers_every_output_once(size, planes):
    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=12, groups=4)
    plan = _module("cupy_onepass").launch_plan(spec, (2, 12, size, size), 4)
    d = plan.defines
    step = plan.lanes // size
    assert plan.planes_per_block == planes and plan.grid * planes >= 24
    assert step * d["SW_OUT"] >= size and (step * (d["SW_OUT"] - 1) < size)  # no thread row is wholly idle
    assert plan.lanes >= (size + 2) // d["SW_RX"] and (size + 2) % d["SW_RX"] == 0 and (size + 2) % d["SW_RY"] == 0
    assert d["SW_THREADS"] >= plan.lanes * planes and plan.shared_bytes <= 48 * 1024


def test_onepass_executes_no_more_than_the_useful_work():
    from harness.perf import useful_flops

    module = _module("cupy_onepass")
    for sparsity in (0.0, 0.5):
        spec = ShiftwiseSpec.random(big_kernel=47, small_kernel=3, channels=6, groups=4, seed=1, sparsity=sparsity)
        fma, adds = module.executed_flops(spec, (2, 6, 14, 14))
        assert 0.9 * useful_flops(spec, (2, 6, 14, 14)) <= 2 * fma + adds <= useful_flops(spec, (2, 6, 14, 14))


def test_branch_moves_add_up_to_the_scatter_moves():
    from harness import scatter_moves
    from harness.cudac.launch import branch_moves

    for sparsity, (height, width) in [(0.0, (56, 56)), (0.3, (7, 9)), (0.6, (3, 40)), (1.0, (5, 5))]:
        spec = ShiftwiseSpec.random(big_kernel=51, small_kernel=3, channels=6, groups=4, seed=2, sparsity=sparsity)
        assert sum(branch_moves(spec, height, width)) == scatter_moves(spec, (1, 6, height, width))


def test_specialise_writes_one_file_per_configuration(tmp_path, monkeypatch):
    from harness.cudac.launch import specialise

    monkeypatch.setenv("SW_HOST_BUILD_DIR", str(tmp_path))
    source = tmp_path / "k.cu"
    source.write_text('extern "C" __global__ void k(float* x) { x[0] = SW_A; }\n')
    first, again, other = specialise(source, {"SW_A": 1}), specialise(source, {"SW_A": 1}), specialise(source, {"SW_A": 2})
    assert first == again != other
    assert first.read_text().startswith("#define SW_A 1\n#line 1 \"k.cu\"\n")


def test_numba_shared_links_with_nvjitlink_at_nvvm_version():
    # Without it, the first launch on a GPU whose driver is older than NVVM fails with
    # "unsupported PTX version": nvJitLink links the kernels to a cubin in-process instead.
    assert _module("numba_shared").nvjitlink_missing() is None
