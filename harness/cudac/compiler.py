"""The host C++ compiler that host builds use."""

from __future__ import annotations

import os
import shutil


def host_compiler() -> str | None:
    """The C++ compiler used for host builds: $CXX, else g++ or c++ on PATH."""
    for candidate in (os.environ.get("CXX"), "g++", "c++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None
