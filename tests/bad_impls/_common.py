"""Shared by the known-bad implementations: the correct naive form they each break one way."""

import importlib.util
from pathlib import Path


def load_torch_roll():
    """The project's torch_roll module (loaded by path: impls/ is a folder, not a package)."""
    path = Path(__file__).resolve().parents[2] / "impls" / "torch_roll.py"
    spec = importlib.util.spec_from_file_location("bad_impls_base_torch_roll", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
