"""Training work to time: the SW operator's forward + backward, and a network's training step.

``layer_ways(case, x, weight, tier)`` gives, for one layer case, a no-argument call per way of
doing one forward + backward of the operator (the gradients of x and of the kernels, for fixed
random branch gradients):

- every implementation that runs natively here, through the custom op ``torch.ops.sw.shiftwise``
  (its own backward where it declares one, else the reference's: ``layers.backward_used``);
- the PyTorch ways: autograd of the merged strips (symmetric zero-padded strips and
  ``padding=``, the fastest merged form of the layer benchmarks) in channels_last and in NCHW,
  the gradients of x and of the three merged kernels; and, in the full tier, ``torch.compile``
  of that training step in NCHW (compiled and warmed up before it is timed).

``network_step(name, impl, batch)`` is one training step of a network in its training form
(not reparameterized, train mode): forward, cross-entropy, backward, AdamW step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.cases import Case
from harness.peers import _radius, symmetric_kernels
from harness.reference import Branches, no_tf32

#: Ways of the PyTorch layer forward + backward, and the first tier that times each.
PYTORCH_WAYS = {"merged_autograd_cl": "quick", "merged_autograd_nchw": "quick", "compiled_merged_step": "full"}


def branch_gradients(case: Case, dtype: torch.dtype) -> Branches:
    """Fixed standard normal upstream gradients of the three branches (seeded by the case)."""
    generator = torch.Generator().manual_seed(case.seed + 2)
    return Branches(*(torch.randn(case.input_shape, generator=generator, dtype=torch.float64).to(dtype) for _ in "hvi"))


def operator_step(impl: str, case: Case, x: torch.Tensor, weight: torch.Tensor, grads: Branches) -> Callable[[], tuple]:
    """Forward + backward of the custom op with implementation ``impl``: returns (grad_x, grad_w)."""
    from harness.models.layers import register_spec

    key = register_spec(case.spec())

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        xx, ww = x.detach().requires_grad_(), weight.detach().requires_grad_()
        with no_tf32():
            branches = torch.ops.sw.shiftwise(xx, ww, key, impl)
            return torch.autograd.grad(branches, (xx, ww), tuple(grads))

    return step


def merged_step(case: Case, x: torch.Tensor, weight: torch.Tensor, grads: Branches, layout: str) -> Callable[[], tuple]:
    """Autograd of the merged strips in ``layout`` (channels_last or nchw): (grad_x, grad_h, grad_v, grad_i)."""
    spec = case.spec()
    c, r, radius = spec.channels, spec.small_kernel // 2, _radius(spec)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    kernels = [t.contiguous(memory_format=fmt) for t in symmetric_kernels(weight, spec)]
    x = x.contiguous(memory_format=fmt)
    grads = tuple(g.contiguous(memory_format=fmt) for g in grads)

    def step() -> tuple[torch.Tensor, ...]:
        xx = x.detach().requires_grad_()
        h, v, i = (k.detach().requires_grad_() for k in kernels)
        with no_tf32():
            out = (
                F.conv2d(xx, h, padding=(r, radius), groups=c),
                F.conv2d(xx, v, padding=(radius, r), groups=c),
                F.conv2d(xx, i, padding=r, groups=c),
            )
            return torch.autograd.grad(out, (xx, h, v, i), grads)

    return step


def compiled_merged_step(case: Case, x: torch.Tensor, weight: torch.Tensor, grads: Branches) -> Callable[[], tuple]:
    """``torch.compile`` (inductor) of the NCHW merged step's forward and backward, warmed up."""
    spec = case.spec()
    c, r, radius = spec.channels, spec.small_kernel // 2, _radius(spec)
    kernels = symmetric_kernels(weight, spec)

    def forward(xx, h, v, i):
        return (
            F.conv2d(xx, h, padding=(r, radius), groups=c),
            F.conv2d(xx, v, padding=(radius, r), groups=c),
            F.conv2d(xx, i, padding=r, groups=c),
        )

    compiled = torch.compile(forward, backend="inductor", dynamic=False)

    def step() -> tuple[torch.Tensor, ...]:
        xx = x.detach().requires_grad_()
        h, v, i = (k.detach().requires_grad_() for k in kernels)
        with no_tf32():
            return torch.autograd.grad(compiled(xx, h, v, i), (xx, h, v, i), tuple(grads))

    step()
    step()
    return step


def layer_ways(case: Case, x: torch.Tensor, weight: torch.Tensor, tier: str = "quick") -> dict[str, Callable[[], tuple]]:
    """Every way of the layer's forward + backward that can run natively on the CPU here."""
    from harness.models.layers import available_implementations

    grads = branch_gradients(case, x.dtype)
    ways = {name: operator_step(name, case, x, weight, grads) for name, reason in available_implementations("cpu", x.dtype).items() if reason is None}
    ways["merged_autograd_cl"] = merged_step(case, x, weight, grads, "channels_last")
    ways["merged_autograd_nchw"] = merged_step(case, x, weight, grads, "nchw")
    if tier == "full":
        ways["compiled_merged_step"] = compiled_merged_step(case, x, weight, grads)
    return ways


def network_step(name: str, impl: str = "auto", batch: int = 8, size: int = 224, seed: int = 0) -> Callable[[], float]:
    """One training step of network ``name`` (training form, train mode) on a fixed random batch:
    forward, cross-entropy, backward, AdamW step. Returns the loss."""
    from harness.models.networks import build_network, network_info

    net = build_network(name, impl if network_info(name).family == "sw" else "auto", seed=seed)
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator)
    labels = torch.randint(0, 1000, (batch,), generator=generator)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with no_tf32():
            loss = F.cross_entropy(net(images), labels)
            loss.backward()
        optimizer.step()
        return float(loss)

    return step
