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

Training benchmarks (``training_items``: the networks of the suites whose TOML says
``measures = "training"``, each SW network once per implementation) go through the same
``harness.bench.Session.measure`` as the layers and the networks: ``prepare_training`` verifies
the network's gradients in float64 against the same network on the reference path before the
step is timed, and the row (``harness.results.TrainingRow``) says whose backward ran through
the SW layers (the implementation's own, or the reference's: ``layers.backward_used``).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness import eligibility
from harness.bench import Prepared, ResultMismatch, Selection
from harness.cases import Case, Tier, load_cases
from harness.checking import CheckCase, describe_mismatch, make_inputs
from harness.eligibility import Purpose
from harness.models.bench import VERIFY_SIZE, ModelMismatch, NetworkItem, model_runs, randomize_for_check
from harness.models.layers import REFERENCE, backward_used, resolve_impl, set_impl
from harness.models.networks import build_network, network_info
from harness.peers import _conv_flops, _radius, symmetric_kernels
from harness.perf import useful_flops
from harness.reference import Branches, gradient_bound, no_tf32, reference_gradients
from harness.registry import Implementation, Role, implementations
from harness.results import BenchmarkRow, TrainingRow
from harness.traffic import compulsory_bytes

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
        return float(loss.detach())

    return step


# ----------------------------------------------------------------------------- training benchmarks
#: Float64 gradients of a network with an implementation against the same network on the
#: reference path: each parameter's gradient within this fraction of its largest magnitude. As
#: for the logits (``harness.models.bench.END_TO_END_RTOL``), the two differ by rounding only
#: (~1e-13 relative per SW layer, carried through the blocks); a wrong backward is O(1).
GRADIENT_RTOL = 1e-6
#: A gradient that is zero analytically (a norm's bias feeding a train-mode norm) is float64
#: cancellation noise of the network's other gradients: allowed up to this fraction of the
#: largest parameter gradient (about 5000 units in the last place of float64).
NOISE_FLOOR = 1e-12


def _training_network(case, implementation: str | None, device: str) -> torch.nn.Module:
    impl = implementation if network_info(case.network).family == "sw" else "auto"
    net = build_network(case.network, impl, small_kernel=case.small_kernel, seed=case.seed)
    randomize_for_check(net, case.seed)
    return net.to(device=device, memory_format=getattr(net, "memory_format", torch.contiguous_format)).train()


def _batch(case, batch: int, size: tuple[int, int], dtype: torch.dtype, device: str, memory_format):
    generator = torch.Generator().manual_seed(case.seed + 1)
    images = torch.randn(batch, 3, *size, generator=generator, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, 1000, (batch,), generator=generator)
    return images.to(device=device, memory_format=memory_format), labels.to(device)


def verify_gradients(net: torch.nn.Module, reference: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> str:
    """One forward + backward of ``net`` and of ``reference`` (the same weights on the reference
    path) in float64: every parameter's gradient within ``GRADIENT_RTOL`` of the reference's
    largest magnitude (plus ``NOISE_FLOOR`` of the largest gradient of all). Raises ``ModelMismatch`` naming the first that is not."""
    grads = []
    for model in (net, reference):
        model = model.double()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images.double()), labels).backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    mine, wanted = grads
    if set(mine) != set(wanted):
        raise ModelMismatch(f"gradients of {sorted(set(wanted) ^ set(mine))} are missing on one side")
    largest = max(want.abs().max().item() for want in wanted.values())
    for name, want in wanted.items():
        error = (mine[name] - want).abs().max().item()
        tolerance = GRADIENT_RTOL * want.abs().max().item() + NOISE_FLOOR * largest
        if not error <= tolerance:
            raise ModelMismatch(f"the gradient of {name} differs from the reference path's by {error:.3g} > {tolerance:.3g}")
    return f"float64: {len(wanted)} parameter gradients within {GRADIENT_RTOL:g} relative of the reference path"


def prepare_training(run, dtype: torch.dtype = torch.float32):
    """Build the network in its training form, verify its gradients (``verify_gradients``, one
    float64 image of at most ``harness.models.bench.VERIFY_SIZE``) and make ready the timed
    training step: a ``harness.bench.Prepared`` whose row is a ``harness.results.TrainingRow``."""
    if run.skip:
        raise RuntimeError(f"{run.id} is not run here: {run.skip}")
    case, device = run.case, run.device
    net = _training_network(case, run.implementation, device)
    memory_format = getattr(net, "memory_format", torch.contiguous_format)
    small = (min(case.height, VERIFY_SIZE), min(case.width, VERIFY_SIZE))
    images64, labels64 = _batch(case, 1, small, torch.float64, device, memory_format)
    if run.implementation is not None:
        reference = set_impl(copy.deepcopy(net), REFERENCE)
        verified = verify_gradients(copy.deepcopy(net), reference, images64, labels64)
    else:  # no SW layers: torch's autograd is the oracle; what is checked is that the step computes
        verified = "a PyTorch network (no SW layers): its loss finite after each checked step"
    net = net.to(dtype)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    images, labels = _batch(case, case.batch, (case.height, case.width), dtype, device, memory_format)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with no_tf32():
            loss = F.cross_entropy(net(images), labels)
            loss.backward()
        optimizer.step()
        sync()
        return loss.detach()

    def verify(loss: object) -> str:
        if not isinstance(loss, torch.Tensor) or not bool(torch.isfinite(loss)):
            raise ModelMismatch(f"{run.id}: the training step's loss is not finite: {loss!r}")
        return verified

    impl = resolve_impl(run.implementation, device, dtype) if run.implementation else None

    def row(verified: str) -> TrainingRow:
        return TrainingRow(
            computation=run.computation, network=case.network, implementation=run.implementation,
            backward=backward_used(impl) if impl else REFERENCE, device=device, case=case.name, suite=case.suite,
            batch=case.batch, height=case.height, width=case.width, params=sum(p.numel() for p in net.parameters()),
            threads=torch.get_num_threads() if device == "cpu" else None, dtype=str(dtype).removeprefix("torch."),
            memory_format="channels_last" if memory_format == torch.channels_last else "contiguous", verified=verified,
        )  # fmt: skip

    return Prepared(step, verify, row, rounds=case.rounds, repeatable=False)


class TrainingItem(NetworkItem):
    """A training run (a ``ModelRun`` of a training suite) as a benchmark item."""

    kind = "training"

    def prepare(self, session) -> Prepared:
        return prepare_training(self.run, session.dtype)


def training_items(selection: Selection) -> list[TrainingItem]:
    """Every training run the selected suites (``measures = "training"``) and tier ask for."""
    suites = list(selection.suites) if selection.suites else None
    runs = model_runs(suites, selection.tier, selection.devices, selection.dtype, Purpose.TRAINING)
    return [TrainingItem(run) for run in runs]


# ----------------------------------------------------------------------------- layer training benchmarks
@dataclass(frozen=True)
class LayerWay:
    """A way of the operator's forward + backward that the layer training benchmarks time: an
    implementation through the custom op, or a PyTorch way (``PYTORCH_WAYS``)."""

    name: str
    role: Role
    description: str
    implementation: Implementation | None = None
    #: the first tier that times it
    tier: str = "quick"

    @property
    def baseline(self) -> bool:
        """The training results' speed baseline: autograd of the merged strips in channels_last."""
        return self.name == "merged_autograd_cl"


#: What each PyTorch way of the layer's forward + backward is, in the results tables.
PYTORCH_WAY_DESCRIPTIONS = {
    "merged_autograd_cl": "autograd of the merged strips (symmetric zero-padded strips, padding=) in channels_last: "
                          "the gradients of x and of the three merged kernels",
    "merged_autograd_nchw": "autograd of the merged strips (symmetric zero-padded strips, padding=) in NCHW",
    "compiled_merged_step": "torch.compile (inductor) of the merged strips' forward + backward in NCHW, "
                            "compiled and warmed up before it is timed",
}  # fmt: skip


def layer_ways_declared() -> list[LayerWay]:
    """Every implementation in impls/ (through the custom op: its own backward, or the
    reference's) and every PyTorch way, implementations first, by name."""
    ways = [LayerWay(name, impl.role, impl.description, impl) for name, impl in sorted(implementations().items())]
    return ways + [LayerWay(name, Role.PYTORCH_WAY, PYTORCH_WAY_DESCRIPTIONS[name], tier=tier) for name, tier in PYTORCH_WAYS.items()]


def small_kernel_gradient(weight: torch.Tensor, spec, merged_grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The gradient of the small kernels from the gradients of the three symmetric merged
    kernels (the chain rule through ``harness.peers.symmetric_kernels``, in float64): each
    merged tap is a sum of small-kernel taps, so its gradient goes back to each of them."""
    with torch.enable_grad():
        w = weight.detach().double().requires_grad_()
        (grad,) = torch.autograd.grad(symmetric_kernels(w, spec), (w,), tuple(g.double() for g in merged_grads))
    return grad


def prepare_layer_training(way: LayerWay, case: Case, dtype: torch.dtype, device: str) -> Prepared:
    """The verified forward + backward of ``way`` on ``case`` and its row (a ``BenchmarkRow``
    with ``passes="forward+backward"``). Verified like ``swbench check``'s backward check: the
    gradients of x and of the small kernels (a merged way's mapped back through the merge) within
    ``gradient_bound`` of the float64 reference's, computed from the buffers as they are when it
    verifies (the timed calls' check refills x)."""
    dtype_name = str(dtype).removeprefix("torch.")
    inputs = make_inputs(CheckCase(case, dtype_name, "float", device=device), nan_pruned=False)
    x, weight, spec = inputs.x, inputs.weight, case.spec()
    grads = Branches(*(g.to(device) for g in branch_gradients(case, dtype)))
    setup = None
    if way.implementation is not None:
        step, backward = operator_step(way.name, case, x, weight, grads), backward_used(way.name)
    elif way.name == "compiled_merged_step":
        started = time.perf_counter()
        step, backward = compiled_merged_step(case, x, weight, grads), "autograd (inductor)"
        setup = time.perf_counter() - started
    else:
        layout = "channels_last" if way.name == "merged_autograd_cl" else "nchw"
        step, backward = merged_step(case, x, weight, grads, layout), "autograd"
    run = step if torch.device(device).type != "cuda" else _synchronized_on(step, device)

    oracles: dict[bytes, tuple] = {}  # the reference's gradients and bounds, by the inputs' contents

    def oracle() -> tuple:
        x64, w64 = x.detach().double().cpu(), weight.detach().double().cpu()
        g64 = Branches(*(g.detach().double().cpu() for g in grads))
        key = hashlib.sha1(b"".join(t.numpy().tobytes() for t in (x64, w64, *g64))).digest()
        if key not in oracles:
            oracles[key] = (reference_gradients(x64, w64, spec, g64), gradient_bound(x64, w64, spec, g64, dtype))
        return oracles[key]

    def verify(result: object) -> str:
        outputs = tuple(result) if isinstance(result, (tuple, list)) else (result,)
        if way.implementation is None:
            if len(outputs) != 4:
                raise ResultMismatch(f"{way.name} on {case.name}: expected grad_x and three merged kernels' gradients, got {len(outputs)}")
            outputs = (outputs[0], small_kernel_gradient(weight, spec, outputs[1:]))
        if len(outputs) != 2:
            raise ResultMismatch(f"{way.name} on {case.name}: expected (grad_x, grad_weight), got {len(outputs)} outputs")
        expected, bounds = oracle()
        problems = []
        for label, mine, want, bound in zip(("x", "weight"), outputs, expected, bounds):
            message = describe_mismatch(mine.detach().cpu(), want, bound, dtype) if isinstance(mine, torch.Tensor) else f"not a tensor: {type(mine).__name__}"
            if message:
                problems.append(f"d/d{label}: {message}")
        if problems:
            raise ResultMismatch(f"{way.name} on {case.name}: " + "; ".join(problems))
        return "gradients of x and of the small kernels within the gradient bound of the float64 reference's"

    flops = TRAINING_FLOPS_FACTOR * useful_flops(spec, case.input_shape)
    # what a merged way executes: its strips' dense taps (zeros included), forward and both gradients
    executed = flops if way.implementation else TRAINING_FLOPS_FACTOR * _conv_flops(x, list(symmetric_kernels(weight, spec)))
    itemsize = x.element_size()
    pixels = x.numel()
    # forward's compulsory traffic + the three branch gradients read + grad_x and grad_weight written
    moved = compulsory_bytes(spec, case.input_shape, itemsize) + itemsize * (3 * pixels + pixels + weight.numel())
    execution = way.implementation.execution_mode(device) if way.implementation else f"torch on {device}"

    def row(verified: str) -> BenchmarkRow:
        return BenchmarkRow.for_case(
            case, computation=way.name, role=way.role.value, baseline=way.baseline, description=way.description,
            device=device, execution=execution, threads=torch.get_num_threads() if device == "cpu" else None,
            dtype=dtype_name, useful_flops=flops, flops=executed, compulsory_bytes=moved, traffic_bytes=None,
            setup_seconds=setup, verified=verified, passes="forward+backward", backward=backward,
        )  # fmt: skip

    source = way.implementation.source if way.implementation else None
    return Prepared(run, verify, row, setup, inputs=(x, weight) if way.implementation else (), source=source)


#: The forward + backward's useful work in units of the forward's: the forward, grad_x (the
#: same products, transposed) and grad_weight (the same products, against the gradients).
TRAINING_FLOPS_FACTOR = 3


def _synchronized_on(fn: Callable[[], object], device: str) -> Callable[[], object]:
    def run() -> object:
        result = fn()
        torch.cuda.synchronize(device)
        return result

    return run


@dataclass(frozen=True)
class LayerTrainingItem:
    """A way's forward + backward on a training suite's layer case and a device (``case``
    None: skipped for every case, with ``skip``)."""

    way: LayerWay
    device: str
    case: Case | None
    skip: str | None = None
    kind = "training"

    @property
    def computation(self) -> str:
        return self.way.name

    @property
    def case_name(self) -> str | None:
        return self.case.name if self.case else None

    @property
    def suite(self) -> str | None:
        return self.case.suite if self.case else None

    @property
    def group(self) -> str:
        return f"{self.case.suite}/{self.case.name}" if self.case else ""

    @property
    def id(self) -> str:
        tail = f"-{self.case.suite}-{self.case.name}" if self.case else ""
        return f"{self.computation}-{self.device}{tail}"

    def prepare(self, session) -> Prepared:
        return prepare_layer_training(self.way, self.case, session.dtype, self.device)


def layer_training_items(selection: Selection) -> list[LayerTrainingItem]:
    """Every way on every layer case of the selected training suites (``measures =
    "training"``) in the tier; a way that cannot run here is one skipped item per device."""
    tier = Tier.parse(selection.tier)
    suites = list(selection.suites) if selection.suites else None
    cases = [case for case in load_cases(suites=suites, measures="training") if tier.includes(case.tier)]
    items: list[LayerTrainingItem] = []
    if not cases:
        return items
    for way in layer_ways_declared():
        for device in selection.devices:
            if way.implementation is not None and device not in way.implementation.devices:
                continue
            if not tier.includes(Tier.parse(way.tier)):
                reason = f"timed from the {way.tier} tier on (compiling a training step takes minutes)"
            else:
                reason = eligibility.reason(way.implementation, device, selection.dtype, Purpose.TRAINING)
            if reason is not None:
                items.append(LayerTrainingItem(way, device, None, reason))
                continue
            items += [LayerTrainingItem(way, device, case) for case in cases]
    return items
