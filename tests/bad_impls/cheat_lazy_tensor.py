"""Cheat: returns tensor subclasses whose values are computed only when something reads them
(the call itself returns at once)."""

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation


class LazyBranch(torch.Tensor):
    """Empty until the first torch operation on it, which computes the branch first."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for arg in args:
            if isinstance(arg, LazyBranch) and getattr(arg, "pending", None) is not None:
                pending, arg.pending = arg.pending, None
                with torch._C.DisableTorchFunctionSubclass():
                    arg.copy_(pending())
        return super().__torch_function__(func, types, args, kwargs or {})


def forward(x, weight, spec):
    outputs = []
    for index in range(3):
        branch = torch.empty_like(x).as_subclass(LazyBranch)
        branch.pending = lambda index=index: reference_forward(x, weight, spec)[index].to(x.dtype)
        outputs.append(branch)
    return tuple(outputs)


IMPLEMENTATION = Implementation(
    name="cheat_lazy_tensor", fn=forward, computes=Computes.OPERATOR, devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
