"""Test configuration: Hypothesis profiles; the benchmark and per-implementation parametrization
is the plugin's (``harness.bench_plugin``, the project's one ``pytest_generate_tests``).

Profiles (pick with ``--hypothesis-profile NAME`` or ``SW_HYPOTHESIS_PROFILE``):
``ci`` (default): derandomized, a bounded number of examples, so ``.ci/run`` stays well under
its 20-minute budget on 2 cores; ``thorough``: many random examples for long runs;
``simulator``: few derandomized examples, for Numba's (slow) CUDA simulator.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

#: The benchmark options, parametrization and JSON hooks (pytest --benchmark-only).
pytest_plugins = ["harness.bench_plugin"]

_PROFILES = {
    "ci": dict(max_examples=200, derandomize=True),
    "thorough": dict(max_examples=2000),
    # For Numba's CUDA simulator (tests/test_numba_simulator.py): Python threads per CUDA thread.
    "simulator": dict(max_examples=25, derandomize=True),
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the profiles and load the chosen one (at configuration, not at import: Hypothesis's
    own ``--hypothesis-profile`` option, read after this, still wins)."""
    for name, options in _PROFILES.items():
        settings.register_profile(
            name, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow], **options
        )
    for where, name in (("SW_HYPOTHESIS_PROFILE", os.environ.get("SW_HYPOTHESIS_PROFILE")),
                        ("--hypothesis-profile", config.getoption("hypothesis_profile", None))):  # fmt: skip
        if name is not None and name not in _PROFILES and name not in ("default", "ci"):
            raise pytest.UsageError(f"{where}: expected a Hypothesis profile, one of {sorted(_PROFILES)}, got {name!r}")
    settings.load_profile(os.environ.get("SW_HYPOTHESIS_PROFILE", "ci"))
