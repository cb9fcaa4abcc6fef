"""Every implementation on the real layer shapes and edge shapes kept in cases/."""

import pytest

from harness.cases import load_cases
from harness.checking import CheckCase, CheckSkipped, assert_matches_reference
from harness.checking.runner import check_gradients_for
from harness.cudac import is_host_build

SUITES = ["sw_tiny", "sw_small", "edge"]
#: The throughput batches (4, 64) repeat the batch-1 layers: checking them again proves nothing new.
CASES = [case for case in load_cases(suites=SUITES) if case.batch <= 2]


@pytest.mark.parametrize("mode", ["exact", "float"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.suite}-{case.name}")
def test_matches_reference_on_case(impl, device, case, mode):
    emulated = impl.runs_on(device).emulated
    if emulated and case.suite != "edge" and not is_host_build(impl):
        pytest.skip("GPU code interpreted one program at a time (not a host build) on a real layer: minutes per case; "
                    "its own tests check real layer shapes on a few channels, the GPU day natively")  # fmt: skip
    if mode == "float" and emulated and case.suite != "edge":
        pytest.skip("emulated GPU code on a real layer: exact mode only (float mode runs on the edge shapes and in the Hypothesis property)")
    try:
        # Gradients on the small (edge) shapes only: at real layer sizes an exact backward costs
        # minutes and checks nothing the Hypothesis gradient tests do not.
        gradients = check_gradients_for("quick", case)
        assert_matches_reference(impl, CheckCase(case, "float32", mode, device=device), gradients=gradients)
    except CheckSkipped as skipped:
        pytest.skip(str(skipped))
