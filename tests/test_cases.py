import pytest

from harness.cases import load_cases, load_suite

SW_TINY = {"tiny-s1": (51, 60, 56), "tiny-s2": (49, 122, 28), "tiny-s3": (47, 246, 14), "tiny-s4": (13, 492, 7)}
SW_SMALL = {"small-s1": (51, 72, 56), "small-s2": (49, 146, 28), "small-s3": (47, 294, 14), "small-s4": (13, 590, 7)}


def test_every_suite_in_cases_loads():
    cases = load_cases()
    assert {case.suite for case in cases} >= {"sw_tiny", "sw_small", "edge"}
    for case in cases:
        case.spec()


@pytest.mark.parametrize("suite, layers", [("sw_tiny", SW_TINY), ("sw_small", SW_SMALL)])
def test_model_suites_hold_the_spec_layer_shapes(suite, layers):
    cases = {case.name: case for case in load_cases(suites=[suite])}
    for name, (big, channels, size) in layers.items():
        case = cases[name]
        assert (case.big_kernel, case.channels, case.height, case.width) == (big, channels, size, size)
        assert (case.small_kernel, case.groups, case.tables) == (3, 4, "official")
        assert cases[f"{name}-sp0.3"].spec().sparsity == pytest.approx(0.3, abs=0.01)


def _suite(tmp_path, text):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


BASE = "[defaults]\nsmall_kernel = 3\ngroups = 1\nbatch = 1\nheight = 4\nwidth = 4\nchannels = 2\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE + "[[case]]\nname = 'a'\nbig_kernel = 7\ncolor = 1\n", r"case #0: unknown keys \['color'\]"),
        (BASE + "[[case]]\nname = 'a'\n", r"missing keys \['big_kernel'\]"),
        (BASE + "[[case]]\nname = 'a'\nbig_kernel = 7\n[[case]]\nname = 'a'\nbig_kernel = 9\n", "repeated: \\['a'\\]"),
        (BASE + "[[case]]\nname = 'a'\nbig_kernel = 8\n", "case 'a': big_kernel must be odd"),
        (BASE + "[[case]]\nname = 'a'\nbig_kernel = 7\ntables = 'mine'\n", "tables must be one of"),
        (BASE + "[[case]]\nname = 'a'\nbig_kernel = 7\nbatch = 0\n", "batch must be a positive int"),
        (BASE + "[[case]]\nname = 'a'\nbig_kernel = 7\nsparsity = 2\n", r"sparsity must be a number in \[0, 1\]"),
        ("[[case]\n", "not valid TOML"),
        ("[oops]\n", "unknown top-level keys"),
    ],
)
def test_broken_suites_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_suite(_suite(tmp_path, text))


def test_unknown_suite_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown suites \\['nope'\\]; .* has \\["):
        load_cases(suites=["nope"])
