"""The whole SW operator on the CPU, compiled with Numba (``parallel=True``), in one of two forms
chosen per call by counting the vector instructions each would execute:

- **planes** (``planes.py``, the original design): the SW gather form, one (b, c) plane per
  task. Stage 1 computes only the small kernels the channel needs (active, and read by an
  in-map slot or the identity) into a cache-resident per-thread buffer, stage 2 sums the moves
  in registers. Lanes run along a row, so a 7- or 14-wide map fills 7/16 or 14/16 of a vector;
  its gain is sparsity: pruned kernels cost nothing (appendix B.3).
- **channels** (``channels.py``): lanes over 16 channels (8 in float64), so every lane is
  used whatever the map width. Lanes over channels cannot share the SW form's y planes (each
  channel puts its kernels at different slots, so the shifts differ per lane), so this form
  applies the slot-merged kernels (per slot, the sum over groups of the active kernels there,
  like ``harness.merge_kernels``) with the taps clipped to the map, all three branches from
  one transposed copy of the input block. On small maps this does 2-3x fewer operations than
  the SW form (M=47 on 14x14: a y plane is computed on 16x16 positions for every kernel,
  though most of its moves are partly off the map), and it fills the lanes.

The choice (``choose_form``) compares, per call, the vector instructions of each form
(planes: stage-1 FMAs of the staged kernels plus one add per move and output vector; channels:
the clipped merged taps per output vector) scaled by their measured cost on this machine.
The merged kernels of the channels form are memoized on the weight's contents (compared
bitwise every call): a model calling with fixed weights merges once, as the PyTorch peers'
``merge_kernels`` runs once in their preparation; changed weights are merged again (for
SW-tiny stage 3, ~0.5 ms on one core).

Why Numba stays the compiler: the hot loops are two LLVM IR row kernels (Numba intrinsics)
that keep accumulators in registers; Numba gives that control from Python with no build step,
and the measured limits below are the algorithm's (operation counts, the NCHW transpose), not
the compiler's. ``forward(..., form="planes" | "channels")`` forces a form (for profiling:
``reports/notes/numba_cpu_phases.py``).

The backward takes the forward's form for the call: in the planes form (``backward.py``) the
adjoint of the gather, fused with the small conv's two gradients, one (b, c) plane per task,
pruned and off-map kernels skipped; in the channels form (``channels_backward.py``) the
gradients through the merged kernels, lanes over channels, mapped back to the small kernels.

No atomics: each output element is summed by one thread. Floating point: only reassociation
and FMA contraction, which the reference's order-independent gamma_n bound covers; pruned
kernels are never read, so NaN weights cannot reach a sum.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from harness import Branches, Computes, Implementation, ShiftwiseSpec

from . import channels, channels_backward, deployed, planes
from .backward import backward as planes_backward

FORMS = ("planes", "channels")
#: Relative cost of one counted vector instruction of each form, measured on the SW-tiny stages
#: at batch 4 (one thread, both forms timed side by side, process CPU time): the planes form
#: took 1.02-1.28x the channels form's time per instruction at sparsity 0 and 1.24-1.66x at
#: 0.3 (its copies, its shorter move lists and its half-filled vectors are not counted).
_COST = {"planes": 1.3, "channels": 1.0}

# Per-spec memos keyed by the spec's identity (checked through a weak reference): hashing a
# spec hashes its tables (tens of microseconds at C=492), more than a stage-4 call can spare.
_lock = threading.Lock()
_merged: dict = {}
_forms: dict = {}


def _remember(memo: dict, key: tuple, value: tuple, most: int) -> None:
    with _lock:
        if len(memo) >= most:
            memo.pop(next(iter(memo)))
        memo[key] = value


def _planes_instructions(spec: ShiftwiseSpec, shape: tuple[int, int, int, int], itemsize: int) -> float:
    batch, _, height, width = shape
    tables = planes._tables(spec, height, width)
    lanes = planes.VECTOR_BYTES // itemsize
    e, k = spec.extra_pad, spec.small_kernel
    hy, wy = height + 2 * e, width + 2 * e
    conv = int(tables.n_staged.sum()) * k * k * hy * -(-wy // lanes)
    moves = int(tables.n_h.sum() + tables.n_i.sum() + tables.n_v.sum()) * height * -(-width // lanes)
    return batch * float(conv + moves)


def _channels_instructions(spec: ShiftwiseSpec, shape: tuple[int, int, int, int], itemsize: int) -> float:
    batch, channel_count, height, width = shape
    lanes = channels.VECTOR_BYTES // itemsize
    blocks = -(-channel_count // lanes)
    transpose = height * width * lanes / 4  # scalar moves into the scratch, 4 per vector op
    return batch * blocks * float(channels.valid_taps(spec, height, width) + transpose)


def choose_form(spec: ShiftwiseSpec, shape: tuple[int, int, int, int], itemsize: int) -> str:
    """The form with the fewer (cost-weighted) vector instructions for this call."""
    cost = {
        "planes": _COST["planes"] * _planes_instructions(spec, shape, itemsize),
        "channels": _COST["channels"] * _channels_instructions(spec, shape, itemsize),
    }
    return min(FORMS, key=cost.get)


def _form(spec: ShiftwiseSpec, shape: tuple[int, int, int, int], itemsize: int) -> str:
    key = (id(spec), shape, itemsize)
    entry = _forms.get(key)
    if entry is not None and entry[0]() is spec:
        return entry[1]
    form = choose_form(spec, shape, itemsize)
    _remember(_forms, key, (weakref.ref(spec), form), 64)
    return form


def _merged_kernels(weight: np.ndarray, spec: ShiftwiseSpec, lanes: int):
    """``channels.merge``'s kernels for these weights, memoized on their bits (an entry per weight tensor)."""
    key = (id(spec), weight.ctypes.data, weight.dtype.str, lanes)  # a stage's layers share a spec
    entry = _merged.get(key)
    merge, _, same = channels.compiled()
    if entry is not None and entry[0]() is spec and entry[1].shape == weight.shape:
        bits = f"u{weight.itemsize}"
        if same(entry[1].reshape(-1).view(bits), weight.reshape(-1).view(bits)):
            return entry[2]
    merged = merge(weight, *channels.slot_tables(spec), lanes)
    _remember(_merged, key, (weakref.ref(spec), weight.copy(), merged), 256)
    return merged


def _channels_forward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec) -> Branches:
    batch, channel_count, height, width = x.shape
    x = x.detach()
    nhwc = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    xs = x.permute(0, 2, 3, 1).numpy() if nhwc else x.contiguous().numpy()
    lanes = channels.VECTOR_BYTES // xs.itemsize
    cpad = -(-channel_count // lanes) * lanes
    k = spec.small_kernel
    w = np.ascontiguousarray(weight.detach().reshape(channel_count * spec.nk, k, k).numpy())
    kh, kv, ki = _merged_kernels(w, spec, lanes)
    outputs = [torch.empty((batch, height, width, cpad), dtype=x.dtype) for _ in range(3)]
    _, operator, _ = channels.compiled()
    operator(xs, nhwc, kh, kv, ki, spec.nk, k, spec.big_kernel, lanes, *(o.numpy() for o in outputs))
    return Branches(*(o.permute(0, 3, 1, 2)[:, :channel_count] for o in outputs))


def forward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, *, form: str | None = None) -> Branches:
    """The three branches (h, v, i) of the SW operator, each shaped like x; ``form`` forces
    one of ``FORMS`` (default: ``choose_form``)."""
    form = form or _form(spec, tuple(x.shape), x.element_size())
    if form == "planes":
        return planes.forward(x, weight, spec)
    if form == "channels":
        return _channels_forward(x, weight, spec)
    raise ValueError(f"form must be one of {FORMS}, got {form!r}")


def backward(x: torch.Tensor, weight: torch.Tensor, spec: ShiftwiseSpec, grad_h: torch.Tensor, grad_v: torch.Tensor,
             grad_i: torch.Tensor, *, form: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(grad_x, grad_weight) for the branch gradients, in the form the forward would use for
    this call (``choose_form``; ``form`` forces one): the planes form's adjoint gather, or the
    channels form's gradients through the merged kernels (``channels_backward``)."""
    form = form or _form(spec, tuple(x.shape), x.element_size())
    if form == "planes":
        return planes_backward(x, weight, spec, grad_h, grad_v, grad_i)
    if form != "channels":
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    lanes = channels.VECTOR_BYTES // x.element_size()
    k = spec.small_kernel
    w = np.ascontiguousarray(weight.detach().reshape(x.shape[1] * spec.nk, k, k).numpy())
    return channels_backward.backward(x, weight, spec, grad_h, grad_v, grad_i, _merged_kernels(w, spec, lanes))


def traffic(spec: ShiftwiseSpec, shape: tuple[int, int, int, int], itemsize: int) -> int:
    """Bytes the chosen form moves to and from memory: x read once, its weights or merged
    kernels and tables once, the three outputs written once (the channels form's outputs are
    padded to whole lane blocks). Scratch areas stay in the core's caches and are not counted."""
    if choose_form(spec, shape, itemsize) == "planes":
        return planes.traffic(spec, shape, itemsize)
    batch, channel_count, height, width = shape
    lanes = channels.VECTOR_BYTES // itemsize
    cpad = -(-channel_count // lanes) * lanes
    kernel = cpad * (2 * spec.nk * spec.small_kernel + spec.small_kernel) * spec.small_kernel
    weights = channel_count * spec.nk * spec.small_kernel**2
    return itemsize * (batch * height * width * (channel_count + 3 * cpad) + kernel + weights)


IMPLEMENTATION = Implementation(
    name="numba_cpu",
    rank=50,  # impl="auto" preference (the layer benchmarks' ranking)
    fn=forward,
    computes=Computes.OPERATOR,
    devices=("cpu",),
    dtypes=(torch.float32, torch.float64),
    traffic=traffic,
    deployed=deployed.deployed,
    backward=backward,
    description="CPU, Numba SIMD row kernels, two forms chosen per call by instruction count: SW gather "
    "per (b, c) plane (pruned kernels skipped) or lanes over channels with clipped merged taps",
)
