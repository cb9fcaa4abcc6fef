"""The error the host emulation raises for what it detects a kernel doing wrong."""

from __future__ import annotations


class HostEmulationError(RuntimeError):
    """A kernel did something the host emulation detected as invalid: divergent barriers,
    a source it cannot model, a sanitizer report, a result that depends on the schedule."""
