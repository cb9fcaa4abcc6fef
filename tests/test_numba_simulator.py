"""numba_shared through the same equivalence tests, in Numba's CUDA simulator.

The simulator must be chosen before numba.cuda is first imported, so it runs in a pytest
subprocess with NUMBA_ENABLE_CUDASIM=1; in this process the implementation is listed as
needing the simulator (its CPU tests are skipped with that reason)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_numba_shared_matches_the_reference_in_the_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-profile=simulator",
        "tests/test_equivalence.py", "tests/test_layers.py",
        "-k", "numba_shared-cpu and (test_equivalence or edge)",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    # the Hypothesis property plus every edge case in both modes (exact, float); nothing may be skipped
    from harness.cases import load_cases

    assert passed == 1 + 2 * len(load_cases(suites=["edge"])) and "skipped" not in summary, summary
