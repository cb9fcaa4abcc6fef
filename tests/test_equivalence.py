"""Every implementation in impls/ against the float64 rep-merged reference.

The property is built by ``equivalence_property`` so ``test_known_bad.py`` can run the very
same search against implementations that must fail it.
"""

from hypothesis import example, given, settings

from harness.cases import Case
from harness.checking import DTYPES, CheckCase, assert_matches_reference

from tests.strategies import check_cases


def _explicit(m, k, c, e, b, h, w, *, tables="random", sparsity=0.3, dtype="float32", mode="exact", layout="contiguous", seed=7):
    return Case(f"M{m}k{k}", m, k, c, e, b, h, w, tables, seed, sparsity), dtype, mode, layout


#: Asymmetric merged kernels (k does not divide M), official tables, maps smaller than k and M,
#: in both modes and all layouts.
EXPLICIT = [
    _explicit(13, 3, 3, 4, 2, 7, 9),
    _explicit(47, 3, 4, 4, 1, 14, 14, tables="official", mode="float"),
    _explicit(49, 3, 3, 4, 2, 9, 30, layout="strided"),
    _explicit(51, 5, 2, 4, 1, 11, 8, mode="float", dtype="float64"),
    _explicit(13, 3, 3, 2, 2, 6, 9, tables="official", sparsity=0.0, layout="channels_last"),
    _explicit(7, 5, 2, 3, 1, 5, 4, tables="official", mode="float"),
    _explicit(51, 3, 2, 4, 1, 2, 1, sparsity=0.6),
    _explicit(47, 7, 3, 8, 2, 3, 40, mode="float"),
    _explicit(9, 1, 2, 2, 3, 5, 5, sparsity=1.0),
]


def equivalence_property(impl, device):
    """The Hypothesis test for one implementation on one device (smaller shapes where it
    runs emulated GPU code)."""

    dtypes = [name for name, dtype in DTYPES.items() if dtype in impl.dtypes]

    emulated = impl.runs_on(device).emulated

    @given(check_case=check_cases(device, dtypes, small=emulated))
    def matches_reference(check_case: CheckCase) -> None:
        assert_matches_reference(impl, check_case)

    if emulated:  # emulated GPU code: a quarter of the profile's examples (each costs ~100x a native call)
        matches_reference = settings(max_examples=max(10, settings.default.max_examples // 4))(matches_reference)

    for case, dtype, mode, layout in EXPLICIT:
        if dtype in dtypes:
            matches_reference = example(CheckCase(case, dtype, mode, layout, device))(matches_reference)
    return matches_reference


def test_matches_reference(impl, device):
    equivalence_property(impl, device)()
