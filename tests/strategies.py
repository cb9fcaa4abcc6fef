"""Hypothesis strategies for equivalence cases."""

from hypothesis import strategies as st

from harness.cases import Case
from harness.checking import DTYPES, LAYOUTS, MODES, CheckCase


@st.composite
def cases(draw, max_big_kernel: int = 31, small: bool = False) -> Case:
    """Small operator instances: any odd M >= k up to ``max_big_kernel``, maps from 1x1 up
    (so smaller than k and than M), non-square, any sparsity, random or official tables.
    ``small`` keeps batch, channels and maps smaller, for emulated GPU code (slow)."""
    limit = 2 if small else 1
    small = draw(st.sampled_from([1, 3, 5, 7]))
    big = draw(st.integers(small // 2, max_big_kernel // 2).map(lambda half: 2 * half + 1))
    return Case(
        name="hypothesis",
        big_kernel=big,
        small_kernel=small,
        channels=draw(st.integers(1, 5 // limit)),
        groups=draw(st.integers(1, 8)),
        batch=draw(st.integers(1, 3 // limit)),
        height=draw(st.integers(1, 20 // limit)),
        width=draw(st.integers(1, 20 // limit)),
        tables=draw(st.sampled_from(["random", "random", "official"])),
        seed=draw(st.integers(0, 2**16)),
        sparsity=draw(st.sampled_from([0.0, 0.0, 0.3, 0.6, 1.0]) | st.floats(0, 1)),
    )


def check_cases(device: str, dtypes=tuple(DTYPES), small: bool = False) -> st.SearchStrategy[CheckCase]:
    return st.builds(
        CheckCase,
        case=cases(small=small),
        dtype=st.sampled_from(list(dtypes)),
        mode=st.sampled_from(MODES),
        layout=st.sampled_from(LAYOUTS),
        device=st.just(device),
    )
