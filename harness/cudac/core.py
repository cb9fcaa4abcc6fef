"""cuda-python's ``cuda.core``, probed once: the module the GPU path and NVRTC builds use,
from whichever place the installed release keeps it, or an ImportError saying what is missing."""

from __future__ import annotations

import functools
import importlib


#: What the GPU path uses from cuda.core.
CUDA_CORE_NAMES = ("Device", "ObjectCode", "LaunchConfig", "Stream", "launch", "Program", "ProgramOptions")


@functools.lru_cache(maxsize=None)
def cuda_core():
    """cuda-python's ``cuda.core`` with what the GPU path uses: ``cuda.core`` itself (0.3 and
    later), else ``cuda.core.experimental`` (the releases before 0.3 kept the API there). An
    ImportError names the release and what it lacks."""
    try:  # import_module returns what sys.modules holds (``import a.b as m`` reads the attribute of a)
        module = importlib.import_module("cuda.core")
    except ImportError as error:
        raise ImportError(f"cuda.core is not importable ({error}); install cuda-python (cuda-core)") from error
    if all(hasattr(module, name) for name in CUDA_CORE_NAMES):
        return module
    try:
        module_experimental = importlib.import_module("cuda.core.experimental")
    except ImportError:
        module_experimental = None
    if module_experimental is not None and all(hasattr(module_experimental, name) for name in CUDA_CORE_NAMES):
        return module_experimental
    version = getattr(module, "__version__", "unknown")
    missing = [name for name in CUDA_CORE_NAMES if not hasattr(module, name)]
    raise ImportError(f"cuda.core {version} lacks {', '.join(missing)} (in cuda.core and cuda.core.experimental)")


def cuda_core_unavailable_reason() -> str | None:
    """Why ``cuda_core()`` cannot be had here, or None."""
    try:
        cuda_core()
    except ImportError as error:
        return str(error)
    return None
