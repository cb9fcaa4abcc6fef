import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import ShiftwiseSpec

OFFICIAL_VECTORS = Path(__file__).resolve().parent / "data" / "official.json"  # see tests/data/README.md


def _official_vectors():
    return json.loads(OFFICIAL_VECTORS.read_text())


def _sizes(entry):
    return {key: entry[key] for key in ("big_kernel", "small_kernel", "channels", "groups")}


@pytest.mark.parametrize("entry", _official_vectors()["tables"], ids=lambda e: "M{big_kernel}k{small_kernel}C{channels}E{groups}".format(**e))
def test_official_tables_match_the_official_code(entry):
    pad_hv, idx_identit = ShiftwiseSpec.official(**_sizes(entry)).to_official_tables()
    assert pad_hv.dtype == np.int32 and idx_identit.dtype == np.int32
    assert pad_hv.flags.c_contiguous and idx_identit.flags.c_contiguous
    np.testing.assert_array_equal(pad_hv, np.array(entry["pad_hv"]))
    np.testing.assert_array_equal(idx_identit, np.array(entry["idx_identit"]))


def test_official_covers_sw_tiny_stages():
    shapes = {(e["big_kernel"], e["channels"]) for e in _official_vectors()["tables"] if e["groups"] == 4}
    assert {(51, 60), (49, 122), (47, 246), (13, 492)} <= shapes


def test_official_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ShiftwiseSpec.official(big_kernel=51, small_kernel=3, channels=8, groups=4)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("entry", _official_vectors()["tables"][:2], ids=["small", "tiny-s1"])
def test_from_official_tables_inverts_to_official_tables(entry):
    spec = ShiftwiseSpec.official(**_sizes(entry))
    rebuilt = ShiftwiseSpec.from_official_tables(
        np.array(entry["pad_hv"]), np.array(entry["idx_identit"]),
        big_kernel=entry["big_kernel"], small_kernel=entry["small_kernel"],
    )  # fmt: skip
    assert rebuilt == spec


@st.composite
def specs(draw):
    k = draw(st.sampled_from([1, 3, 5, 7]))
    m = 2 * draw(st.integers(k // 2, 25)) + 1
    return ShiftwiseSpec.random(
        big_kernel=m, small_kernel=k, channels=draw(st.integers(1, 6)), groups=draw(st.integers(1, 8)),
        seed=draw(st.integers(0, 2**32 - 1)), sparsity=draw(st.floats(0, 1)),
    )  # fmt: skip


@given(specs())
def test_round_trips_are_lossless(spec):
    assert ShiftwiseSpec.from_json(spec.to_json()) == spec
    pad_hv, idx_identit = spec.to_official_tables()
    assert pad_hv.shape == (spec.channels * spec.nk, 2 * spec.groups)
    assert idx_identit.shape == (spec.channels, spec.groups)
    again = ShiftwiseSpec.from_official_tables(
        pad_hv, idx_identit, big_kernel=spec.big_kernel, small_kernel=spec.small_kernel, active=spec.active
    )
    assert again == spec


@given(specs())
def test_random_specs_are_valid_and_reproducible(spec):
    for table in (spec.slot_h, spec.slot_v):
        assert (np.sort(table, axis=-1) == np.arange(spec.nk)).all()
    assert ((0 <= spec.ident) & (spec.ident < spec.nk)).all()


def test_random_is_deterministic_and_sparsity_counts_whole_kernels():
    kwargs = dict(big_kernel=51, small_kernel=3, channels=10, groups=4, seed=3, sparsity=0.3)
    spec = ShiftwiseSpec.random(**kwargs)
    assert spec == ShiftwiseSpec.random(**kwargs)
    assert spec != ShiftwiseSpec.random(**{**kwargs, "seed": 4})
    assert (~spec.active).sum() == round(0.3 * 10 * 17)


def test_derived_sizes():
    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=2, groups=1)
    assert (spec.nk, spec.padding, spec.extra_pad) == (5, 2, 1)
    assert spec.shifts == (4, 1, -2, -5, -8)
    assert spec.weight_shape == (10, 1, 3, 3)


def test_tables_are_read_only():
    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=2, groups=1)
    with pytest.raises(ValueError):
        spec.slot_h[0, 0, 0] = 1
    with pytest.raises(AttributeError):
        spec.groups = 3


def _tables(e=1, c=1, nk=5):
    perm = np.broadcast_to(np.arange(nk), (e, c, nk))
    return perm, perm, np.zeros((e, c), dtype=int)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(big_kernel=13, small_kernel=4), "small_kernel must be odd, got 4"),
        (dict(big_kernel=3, small_kernel=5), "big_kernel must be >= small_kernel"),
        (dict(big_kernel=12, small_kernel=3), "big_kernel must be odd, got 12"),
        (dict(channels=0), "channels must be positive, got 0"),
        (dict(groups=-1), "groups must be positive, got -1"),
        (dict(groups=2.0), "groups must be an int, got float"),
    ],
)
def test_bad_sizes_are_refused(kwargs, message):
    sizes = dict(big_kernel=13, small_kernel=3, channels=1, groups=1) | kwargs
    with pytest.raises(ValueError, match=message):
        ShiftwiseSpec.official(**sizes)
    with pytest.raises(ValueError, match=message):
        ShiftwiseSpec.random(**sizes, seed=0)


def test_bad_tables_are_refused():
    slot_h, slot_v, ident = _tables()
    ok = dict(big_kernel=13, small_kernel=3, channels=1, groups=1)
    ShiftwiseSpec(**ok, slot_h=slot_h, slot_v=slot_v, ident=ident)
    with pytest.raises(ValueError, match=r"slot_h\[0, 0\] must be a permutation of 0..4.*got \[0, 0, 2, 3, 4\]"):
        ShiftwiseSpec(**ok, slot_h=np.array([[[0, 0, 2, 3, 4]]]), slot_v=slot_v, ident=ident)
    with pytest.raises(ValueError, match=r"slot_v must have shape \(1, 1, 5\), got \(1, 1, 4\)"):
        ShiftwiseSpec(**ok, slot_h=slot_h, slot_v=np.array([[[0, 1, 2, 3]]]), ident=ident)
    with pytest.raises(ValueError, match=r"ident\[0, 0\] must be in 0..4, got 5"):
        ShiftwiseSpec(**ok, slot_h=slot_h, slot_v=slot_v, ident=np.array([[5]]))
    with pytest.raises(ValueError, match=r"active must have shape \(1, 5\), got \(5,\)"):
        ShiftwiseSpec(**ok, slot_h=slot_h, slot_v=slot_v, ident=ident, active=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="active must be a boolean mask"):
        ShiftwiseSpec(**ok, slot_h=slot_h, slot_v=slot_v, ident=ident, active=np.ones((1, 5)))
    with pytest.raises(ValueError, match="slot_h must hold integers"):
        ShiftwiseSpec(**ok, slot_h=slot_h.astype(float), slot_v=slot_v, ident=ident)


def test_bad_official_tables_are_refused():
    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=3, groups=2)
    pad_hv, idx_identit = spec.to_official_tables()
    sizes = dict(big_kernel=13, small_kernel=3)
    with pytest.raises(ValueError, match=r"pad_hv\[0, 0\] = 3 is not a shift of M=13, k=3"):
        ShiftwiseSpec.from_official_tables(np.where(np.arange(4) == 0, 3, pad_hv), idx_identit, **sizes)
    with pytest.raises(ValueError, match="pad_hv must have C\\*nk rows"):
        ShiftwiseSpec.from_official_tables(pad_hv[:-1], idx_identit, **sizes)
    with pytest.raises(ValueError, match=r"idx_identit must have shape \(C, E\) = \(3, 2\)"):
        ShiftwiseSpec.from_official_tables(pad_hv, idx_identit.T, **sizes)
    bad = idx_identit.copy()
    bad[1, 0] = 0
    with pytest.raises(ValueError, match="is not a kernel of channel 1"):
        ShiftwiseSpec.from_official_tables(pad_hv, bad, **sizes)
    with pytest.raises(ValueError, match=r"slot_h\[0, 0\] must be a permutation"):
        ShiftwiseSpec.from_official_tables(np.repeat(pad_hv[:1], 15, axis=0), idx_identit, **sizes)


def test_from_dict_refuses_missing_keys():
    data = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=1, groups=1).to_dict()
    del data["active"]
    with pytest.raises(ValueError, match="needs exactly the keys"):
        ShiftwiseSpec.from_dict(data)


def test_pruned_rejects_bad_sparsity():
    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=1, groups=1)
    with pytest.raises(ValueError, match=r"ShiftwiseSpec.pruned: sparsity must be a number in \[0, 1\], got 1.5"):
        spec.pruned(1.5, seed=0)


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True])
def test_bad_seeds_are_named(seed):
    with pytest.raises(ValueError, match=rf"ShiftwiseSpec.random: seed must be a non-negative integer, got {seed!r}"):
        ShiftwiseSpec.random(big_kernel=13, small_kernel=3, channels=1, groups=1, seed=seed)


def test_reference_names_a_wrong_weight_shape():
    from harness import reference_forward

    spec = ShiftwiseSpec.official(big_kernel=13, small_kernel=3, channels=2, groups=1)
    with pytest.raises(ValueError, match=r"reference_forward: weight must have shape \(C\*nk, 1, k, k\) = \(10, 1, 3, 3\), got \(3, 1, 3, 3\)"):
        reference_forward(torch.zeros(1, 2, 5, 5), torch.zeros(3, 1, 3, 3), spec)
