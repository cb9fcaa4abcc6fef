"""Test configuration: Hypothesis profiles and one test per (implementation, device).

Profiles (pick with ``--hypothesis-profile NAME`` or ``SW_HYPOTHESIS_PROFILE``):
``ci`` (default): derandomized, a bounded number of examples, so ``.ci/run`` stays well under
its 20-minute budget on 2 cores; ``thorough``: many random examples for long runs;
``simulator``: few derandomized examples, for Numba's (slow) CUDA simulator.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

import harness

#: The benchmark options, parametrization and JSON hooks (pytest --benchmark-only).
pytest_plugins = ["harness.bench_plugin"]

_PROFILES = {
    "ci": dict(max_examples=200, derandomize=True),
    "thorough": dict(max_examples=2000),
    # For Numba's CUDA simulator (tests/test_numba_simulator.py): Python threads per CUDA thread.
    "simulator": dict(max_examples=25, derandomize=True),
}
for name, options in _PROFILES.items():
    settings.register_profile(
        name, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow], **options
    )
settings.load_profile(os.environ.get("SW_HYPOTHESIS_PROFILE", "ci"))

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking ``impl`` and ``device`` run once per implementation in impls/ and device;
    a pair that cannot run here is skipped with the implementation's own reason."""
    if "impl" not in metafunc.fixturenames or "device" not in metafunc.fixturenames:
        return
    params = []
    for name, impl in sorted(harness.implementations().items()):
        for device in impl.devices:
            reason = impl.unavailable_reason(device)
            marks = [pytest.mark.skip(reason=f"{name} on {device}: {reason}")] if reason else []
            params.append(pytest.param(impl, device, id=f"{name}-{device}", marks=marks))
    metafunc.parametrize(("impl", "device"), params)
