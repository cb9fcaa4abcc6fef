"""One answer to "can implementation I run on device D in dtype T for purpose P here", with a
typed reason, shared by the tests' parametrization, the check, the benchmarks and the networks."""

import pytest
import torch

from harness import Execution, Implementation, implementations
from harness.bench import DEPLOYED_SUFFIX, computations
from harness.checking import CheckCase, check
from harness.cases import Case
from harness.eligibility import Purpose, Why, reason, refusal
from harness.models.layers import available_implementations
from harness.registry import NO_CUDA_DEVICE, Computes


def _record(execution=None, dtypes=(torch.float32,), devices=("cpu",)) -> Implementation:
    extra = {"execution": execution} if execution else {}
    return Implementation("probe", lambda x, w, s: None, Computes.OPERATOR, devices, dtypes, **extra)


EMULATED = _record(lambda device: Execution("host emulation: probe.cu", emulated=True, host_build=True))


def test_an_emulation_of_gpu_code_is_checked_but_never_timed():
    assert refusal(EMULATED, "cpu", torch.float32, Purpose.CHECK) is None
    for purpose in (Purpose.LAYER, Purpose.NETWORK, Purpose.TRAINING):
        assert refusal(EMULATED, "cpu", torch.float32, purpose).why is Why.EMULATED
    assert "never timed" in reason(EMULATED, "cpu", torch.float32, Purpose.LAYER)
    assert "too slow for a network" in reason(EMULATED, "cpu", torch.float32, Purpose.NETWORK)


def test_each_kind_of_refusal_is_typed():
    plain = _record()
    assert refusal(plain, "cpu", torch.float32, Purpose.LAYER) is None
    assert refusal(plain, "cpu", torch.float64, Purpose.CHECK).why is Why.DTYPE
    assert str(refusal(plain, "cpu", torch.float64, Purpose.CHECK)) == "supports float32, not float64"
    assert refusal(plain, "cuda", None, Purpose.CHECK).why is Why.DEVICE_NOT_DECLARED
    missing = _record(lambda device: Execution("native cpu", "needs the frobnicator package"))
    assert refusal(missing, "cpu", None, Purpose.CHECK).why is Why.UNAVAILABLE
    if not torch.cuda.is_available():
        assert refusal(_record(devices=("cpu", "cuda")), "cuda", None, Purpose.LAYER).why is Why.NO_DEVICE
        assert reason(None, "cuda", None, Purpose.LAYER) == NO_CUDA_DEVICE  # plain torch: a peer, the reference
    assert reason(None, "cpu", torch.float64, Purpose.NETWORK) is None


def test_every_user_asks_the_same_policy():
    """The check, the layer benchmarks and the networks give the policy's own answer."""
    case = Case("tiny", 7, 3, 2, 1, 1, 5, 5)
    dtype = torch.float64
    missing = _record(lambda device: Execution("native cpu", "needs the frobnicator package"), dtypes=(torch.float64,))
    for impl in (_record(), missing):  # refused: the check skips them with the policy's reason
        result = check(impl, CheckCase(case, "float64", "exact"), gradients=False)
        assert result.skipped == reason(impl, "cpu", dtype, Purpose.CHECK) is not None
    layer = {c.name: c.not_benchmarked_reason("cpu", "quick", dtype) for c in computations() if c.implementation}
    asked = {name: reason(impl, "cpu", dtype, Purpose.LAYER) for name, impl in implementations().items()}
    assert layer == asked | {name + DEPLOYED_SUFFIX: asked[name] for name, impl in implementations().items() if impl.deployed}
    assert available_implementations("cpu", dtype) == {
        name: reason(impl, "cpu", dtype, Purpose.NETWORK) for name, impl in implementations().items()
    }


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_host_build_is_known_by_its_declared_execution_not_its_mode_text(purpose):
    from harness import cudac

    renamed = _record(lambda device: Execution("something else entirely", emulated=True, host_build=True))
    assert cudac.is_host_build(renamed) and not cudac.is_host_build(_record())
    assert (refusal(renamed, "cpu", torch.float32, purpose) is None) == (purpose is Purpose.CHECK)
