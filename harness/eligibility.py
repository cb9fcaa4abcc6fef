"""Can this run here? One answer for every purpose: whether implementation I (or plain torch,
``None``: a peer, the reference) can run on device D in dtype T for purpose P, with a typed
reason when it cannot.

Purposes: ``CHECK`` (equivalence with the reference: emulations of GPU code included),
``LAYER`` (a layer benchmark), ``NETWORK`` (inside a network benchmark) and ``TRAINING`` (a
training benchmark: forward, backward and an optimizer step). Emulations of GPU code (host
builds, Numba's simulator) are checked, never timed: too slow to say anything about the GPU.
The benchmarks' own conditions (a peer's first tier) are the benchmarks'; everything about
the implementation and the machine is here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from harness.registry import NO_CUDA_DEVICE, Implementation


class Purpose(enum.Enum):
    CHECK = "check"
    LAYER = "layer benchmark"
    NETWORK = "network"
    TRAINING = "training"


class Why(enum.Enum):
    """Why something cannot run (the kind; ``Refusal.message`` says it in words)."""

    #: the implementation does not declare the device type
    DEVICE_NOT_DECLARED = "device not declared"
    #: no such device on this machine
    NO_DEVICE = "no device"
    #: the implementation's own reason (a missing package, no compiler, ...)
    UNAVAILABLE = "unavailable"
    #: the dtype is not one the implementation declares
    DTYPE = "dtype"
    #: an emulation of GPU code: checked, never timed
    EMULATED = "emulated"


@dataclass(frozen=True)
class Refusal:
    why: Why
    message: str

    def __str__(self) -> str:
        return self.message


def refusal(impl: Implementation | None, device: str | torch.device, dtype: torch.dtype | None,
            purpose: Purpose) -> Refusal | None:  # fmt: skip
    """Why ``impl`` (None: plain torch) cannot run on ``device`` in ``dtype`` (None: any it
    declares) for ``purpose`` here, or None when it can."""
    device = torch.device(device)
    if impl is None:
        if device.type == "cuda" and not torch.cuda.is_available():
            return Refusal(Why.NO_DEVICE, NO_CUDA_DEVICE)
        return None
    if device.type not in impl.devices:
        return Refusal(Why.DEVICE_NOT_DECLARED, f"runs on {', '.join(impl.devices)}, not {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        return Refusal(Why.NO_DEVICE, NO_CUDA_DEVICE)
    execution = impl.runs_on(device)
    if execution.unavailable is not None:
        return Refusal(Why.UNAVAILABLE, execution.unavailable)
    if dtype is not None and dtype not in impl.dtypes:
        return Refusal(Why.DTYPE, f"supports {', '.join(str(d).removeprefix('torch.') for d in impl.dtypes)}, "
                                  f"not {str(dtype).removeprefix('torch.')}")  # fmt: skip
    if execution.emulated and purpose is not Purpose.CHECK:
        if purpose is Purpose.LAYER:
            return Refusal(Why.EMULATED, f"{execution.mode}: an emulation of GPU code, checked for correctness but never timed")
        what = "network" if purpose is Purpose.NETWORK else "training step"
        return Refusal(Why.EMULATED, f"emulated on {device.type} ({execution.mode}): too slow for a {what}")
    return None


def reason(impl: Implementation | None, device: str | torch.device, dtype: torch.dtype | None, purpose: Purpose) -> str | None:
    """``refusal``'s message, or None when it can run."""
    found = refusal(impl, device, dtype, purpose)
    return None if found is None else found.message
