"""The checker itself is tested: each known-bad implementation in tests/bad_impls/ must fail
the same equivalence property every real implementation passes, for the right reason."""

import dataclasses
import shutil
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
    # cheats: each caught for what it did (harness.checking.integrity)
    "cheat_replays_by_pointer": "cheat",
    "cheat_caches_by_pointer": "values",
    "cheat_works_once": "values",
    "cheat_lazy_tensor": "cheat",
    "cheat_background_thread": "cheat",
    "cheat_output_in_input": "cheat",
    "cheat_zeroes_weight": "mutated-input",
    "cheat_patches_timer": "tampering",
    "cheat_patches_checker": "tampering",
    "cheat_side_stream": "cheat",
    "bad_unreversed_shifts": "gradient",
    "bad_backward_ignores_sparsity": "gradient",
    "bad_backward_wrong_channel": "gradient",
}

#: known bad implementations the check cannot see (they misbehave only when timed), and what
#: the benchmark run records for them (tests/test_hostile.py runs them)
CAUGHT_BY_THE_BENCHMARK = {"bad_hangs_when_timed": "ran past its time limit"}

#: implementation -> what its failure message must say it did
SAYS = {
    "cheat_replays_by_pointer": "is the memory of an earlier call's output",
    "cheat_caches_by_pointer": "the same input buffers, now holding -x",
    "cheat_works_once": "the first call matched",
    "cheat_lazy_tensor": "not a plain torch.Tensor",
    "cheat_background_thread": "changed after the call returned",
    "cheat_output_in_input": "output h shares memory with the input x",
    "cheat_zeroes_weight": "modified its input weight",
    "cheat_patches_timer": "time.perf_counter was replaced by function _slow_clock defined in",
    "cheat_patches_checker": "compare_with_reference was replaced by function _finds_nothing",
    "cheat_side_stream": "changed after the call returned",
}


def test_every_known_bad_implementation_loads():
    found = discover(BAD_IMPLS)
    assert found.errors == {}
    assert set(found.implementations) == set(EXPECTED) | set(CAUGHT_BY_THE_BENCHMARK)


#: Cheats whose trick happens when their file is imported: loaded from a fresh copy, so the trick
#: happens in the test even when an earlier test in the same worker imported the file and a
#: benchmark's check found and undid it.
AT_IMPORT = {"cheat_patches_timer"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_checker_rejects(name, tmp_path):
    folder = tmp_path if name in AT_IMPORT else BAD_IMPLS
    if name in AT_IMPORT:
        shutil.copy(BAD_IMPLS / f"{name}.py", tmp_path / f"{name}.py")
    impl = discover(folder).implementations[name]
    device = "cpu" if "cpu" in impl.devices else "cuda"  # cheat_side_stream's trick exists on CUDA only
    if impl.unavailable_reason(device):
        pytest.skip(f"{name} runs on {device} only, and here: {impl.unavailable_reason(device)}")
    with pytest.raises(MismatchError) as caught:
        equivalence_property(impl, device)()
    result = caught.value.result
    assert EXPECTED[name] in {failure.kind for failure in result.failures}
    assert SAYS.get(name, "") in report_of(result)
    report = str(caught.value)
    assert result.reproducer in report
    assert f"swbench --impls-dir {folder} check --impl {name} --case" in result.reproducer


def report_of(result) -> str:
    return "\n".join(failure.message for failure in result.failures)


def test_a_skipped_check_is_never_a_pass():
    from harness.cases import Case
    from harness.checking import CheckCase, CheckSkipped, assert_matches_reference

    impl = dataclasses.replace(discover(BAD_IMPLS).implementations["bad_zeros"], devices=("cpu",))
    with pytest.raises(CheckSkipped, match="bad_zeros: runs on cpu, not cuda"):
        assert_matches_reference(impl, CheckCase(Case("x", 7, 3, 1, 1, 1, 4, 4), device="cuda"))
