"""Cheat (CUDA only): returns its outputs while the work that fills them is still queued on a
side stream that the caller's stream never waits for, so a timer on the caller's stream stops
before the work is done (the gpu-mode leaderboards saw this). ``torch.cuda._sleep`` holds the
side stream long enough that the outputs are certainly unwritten when the call returns."""

import torch

from harness import reference_forward
from harness.registry import Computes, Implementation

#: GPU clock cycles the side stream sleeps before writing (about 50 ms at 2 GHz)
SLEEP_CYCLES = 100_000_000


def forward(x, weight, spec):
    outputs = tuple(torch.zeros_like(x) for _ in range(3))
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))  # the inputs and zeros are ready
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP_CYCLES)
        for out, branch in zip(outputs, reference_forward(x, weight, spec)):
            out.copy_(branch)
    for tensor in (x, weight, *outputs):
        tensor.record_stream(side)  # the caching allocator must not hand them out early
    return outputs  # no torch.cuda.current_stream().wait_stream(side): that is the cheat


IMPLEMENTATION = Implementation(
    name="cheat_side_stream", fn=forward, computes=Computes.OPERATOR, devices=("cuda",),
    dtypes=(torch.float32, torch.float64),
)  # fmt: skip
