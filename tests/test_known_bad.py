"""The checker itself is tested: each known-bad implementation in tests/bad_impls/ must fail
the same equivalence property every real implementation passes, for the right reason."""

import dataclasses
from pathlib import Path

import pytest

from harness import discover
from harness.checking import MismatchError

from tests.test_equivalence import equivalence_property

BAD_IMPLS = Path(__file__).parent / "bad_impls"

#: implementation -> the failure kind the checker must report for it
EXPECTED = {
    "bad_zeros": "values",
    "bad_shift_off_by_one": "values",
    "bad_ignores_sparsity": "values",
    "bad_swapped_branches": "values",
    "bad_mutates_input": "mutated-input",
    "bad_float16": "values",
}


def test_every_known_bad_implementation_loads():
    found = discover(BAD_IMPLS)
    assert found.errors == {}
    assert set(found.implementations) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_checker_rejects(name):
    impl = discover(BAD_IMPLS).implementations[name]
    with pytest.raises(MismatchError) as caught:
        equivalence_property(impl, "cpu")()
    result = caught.value.result
    assert EXPECTED[name] in {failure.kind for failure in result.failures}
    report = str(caught.value)
    assert result.reproducer in report
    assert f"swbench --impls-dir {BAD_IMPLS} check --impl {name} --case" in result.reproducer


def test_a_skipped_check_is_never_a_pass():
    from harness.cases import Case
    from harness.checking import CheckCase, CheckSkipped, assert_matches_reference

    impl = dataclasses.replace(discover(BAD_IMPLS).implementations["bad_zeros"], devices=("cpu",))
    with pytest.raises(CheckSkipped, match="bad_zeros: runs on cpu, not cuda"):
        assert_matches_reference(impl, CheckCase(Case("x", 7, 3, 1, 1, 1, 4, 4), device="cuda"))
