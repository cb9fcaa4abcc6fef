"""triton_sw: its kernels in Triton's interpreter on the CPU, in every autotuning config, and
built ahead of time for sm_80 and sm_90 (no GPU).

The generic equivalence tests (test_equivalence.py's Hypothesis property and explicit
examples, test_layers.py's edge and layer cases) already run triton_sw on the CPU through the
interpreter with the interpreter's tile; here every config the autotuner may pick on a GPU
runs the same checks (``assert_matches_reference``) on shapes that span several tiles and
band chunks, so a tile-boundary or clipping bug in any of them is caught without a GPU."""

import dataclasses
import os
import re
import sys

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed (the project's [test] extra installs it)")

import torch  # noqa: E402

from harness import implementations  # noqa: E402
from harness.cases import Case, load_cases  # noqa: E402
from harness.checking import LAYOUTS, CheckCase, assert_matches_reference  # noqa: E402

IMPL = implementations()["triton_sw"]
MODULE = sys.modules[IMPL.fn.__module__]

#: Maps wider and taller than every tile, k not dividing M (asymmetric strips: the window's
#: two ends differ), and a strip longer than the map; plus the edge suite (tiny maps, k = 1..7,
#: E = 1 and 8, full pruning).
TILED = [
    Case("M13-k3-tiles", 13, 3, 1, 3, 1, 35, 70, tables="random", seed=3, sparsity=0.3),
    Case("M49-k3-tall", 49, 3, 1, 2, 1, 70, 9, tables="official", seed=0, sparsity=0.0),
    Case("M7-k5-tiles", 7, 5, 1, 4, 1, 33, 34, tables="random", seed=5, sparsity=0.5),
]
#: Edge shapes whose tiling differs from the interpreter's (a 60-wide map) or that break
#: careless clipping (k = 1, a 1x1 map, every kernel pruned).
EDGE = [c for c in load_cases(suites=["edge"]) if c.name in ("M49-k3-wide", "M7-k1-E1", "M51-k3-1x1-map", "M13-k3-all-pruned")]
#: SW-tiny's stages 3 and 4 (M=47 on 14x14, M=13 on 7x7; official tables), on 8 of their
#: channels: the real layers' shapes at a size the interpreter runs in seconds
#: (test_layers.py checks interpreted code on the edge shapes only).
LAYERS = [dataclasses.replace(c, channels=8) for c in load_cases(suites=["sw_tiny"]) if c.name in ("tiny-s3", "tiny-s4")]


def _config_id(config):
    return "h{}-w{}-k{}-warps{}".format(*config)


@pytest.mark.parametrize("config", MODULE.CONFIGS, ids=_config_id)
def test_every_autotuning_config_matches_the_reference(config, monkeypatch):
    monkeypatch.setattr(MODULE, "INTERPRETER_CONFIG", config)
    for index, case in enumerate(TILED + EDGE):
        layout = LAYOUTS[index % len(LAYOUTS)]  # contiguous, strided and channels_last in turn
        assert_matches_reference(IMPL, CheckCase(case, "float32", "exact", layout, "cpu"), gradients=False)
    for index, case in enumerate(TILED[:2]):
        dtype = ("float32", "float64")[index % 2]
        assert_matches_reference(IMPL, CheckCase(case, dtype, "float", LAYOUTS[(index + 1) % len(LAYOUTS)], "cpu"), gradients=False)


@pytest.mark.parametrize("mode", ["exact", "float"])
def test_real_layer_shapes_on_a_few_channels(mode):
    assert len(LAYERS) == 2
    for case in LAYERS:
        assert_matches_reference(IMPL, CheckCase(case, "float32", mode, "channels_last", "cpu"), gradients=False)


def test_the_interpreter_leaves_no_process_state():
    """Interpreted kernels run without TRITON_INTERPRET: after a call, the environment, the
    language module and what triton.jit returns are what they were."""
    before_env, before_load = os.environ.get("TRITON_INTERPRET"), triton.language.load
    case = CheckCase(EDGE[0], "float32", "exact", "contiguous", "cpu")
    assert_matches_reference(IMPL, case, gradients=False)
    assert os.environ.get("TRITON_INTERPRET") == before_env
    assert triton.language.load is before_load

    def probe(x_ptr):
        pass

    if before_env in (None, "", "0"):
        from triton.runtime.jit import JITFunction

        assert isinstance(triton.jit(probe), JITFunction)


def test_cpu_runs_are_emulated_and_cuda_is_refused_under_the_interpreter_env(monkeypatch):
    assert IMPL.runs_on("cpu").emulated and IMPL.runs_on("cpu").unavailable is None
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reason = IMPL.execution(torch.device("cuda")).unavailable
    assert reason and "TRITON_INTERPRET=1" in reason
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert IMPL.execution(torch.device("cuda")).unavailable is None


def test_autotuner_configs_and_pruning():
    tuned, _ = MODULE._kernels(False)
    found = sorted((c.kwargs["BLOCK_H"], c.kwargs["BLOCK_W"], c.kwargs["BLOCK_K"], c.num_warps) for c in tuned.configs)
    assert found == sorted(MODULE.CONFIGS)
    kept = MODULE._prune(tuned.configs, {"H": 7, "W": 7})
    assert [(c.kwargs["BLOCK_H"], c.kwargs["BLOCK_W"]) for c in kept] == [(16, 16)]
    assert len(MODULE._prune(tuned.configs, {"H": 56, "W": 56})) == len(MODULE.CONFIGS)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_ahead_of_time_builds_use_ieee_arithmetic(arch):
    """fp32 strips are FMA, never TF32 (tl.dot in IEEE precision); fp64 builds too."""
    names = [n for n in MODULE._sw_strips.__code__.co_varnames[: MODULE._sw_strips.__code__.co_argcount] if n not in MODULE.STRIPS_CONSTEXPRS]
    constexprs = {"K": 3, "BLOCK_H": 16, "BLOCK_W": 16, "BLOCK_K": 16}
    fp32 = MODULE._compile(MODULE._sw_strips, MODULE._signature(names, "*fp32"), constexprs, arch, 4).asm["ptx"]
    assert "fma.rn.f32" in fp32 and not re.search(r"tf32", fp32)
    fp64 = MODULE._compile(MODULE._sw_strips, MODULE._signature(names, "*fp64"), constexprs, arch, 4).asm["ptx"]
    assert re.search(r"f64", fp64) and not re.search(r"tf32|\.f32\.f32", fp64)


def test_kernel_figures_launch_each_stage_once_per_kernel():
    """One strips launch and one merge launch per SW-tiny stage (the estimates add a stage's
    launches), each at the config the figures name, with its build's dynamic shared memory."""
    from harness.cudac import report_stages

    figures = IMPL.kernel_figures("sm_80")
    stages = sorted(case for case, _, _ in report_stages())
    for kernel in ("sw_strips", "sw_merge"):
        launched = sorted(launch.case for f in figures if f.kernel == kernel for launch in f.launches)
        assert launched == stages, kernel
    assert all(f.build for f in figures)
    assert all(f.build.endswith(MODULE.STATIC_PICK) == bool(f.launches) for f in figures if f.kernel == "sw_strips")
    assert {f.build.removesuffix(MODULE.STATIC_PICK) for f in figures if f.kernel == "sw_strips"} == {
        f"BLOCK_H={h} BLOCK_W={w} BLOCK_K={k} num_warps={n}" for h, w, k, n in MODULE.CONFIGS
    }


def test_figures_describe_the_cubin_triton_builds():
    """The ptxas figures and the SASS mix come from assembling Triton's PTX with Triton's ptxas
    and options: the very code of the cubin triton.compile returns."""
    from harness.cudac import assemble_ptx, kernel_sass

    names = [n for n in MODULE._sw_strips.__code__.co_varnames[: MODULE._sw_strips.__code__.co_argcount] if n not in MODULE.STRIPS_CONSTEXPRS]
    compiled = MODULE._compile(MODULE._sw_strips, MODULE._signature(names, "*fp32"), {"K": 3, "BLOCK_H": 16, "BLOCK_W": 16, "BLOCK_K": 16}, "sm_90", 4)
    path, options = MODULE._ptxas("sm_90")
    figures, cubin = assemble_ptx(compiled.asm["ptx"], "sm_90", ptxas=path, options=options)
    ((name, found),) = figures.items()
    assert name == compiled.metadata.name and found.arch == "sm_90" and found.registers > 0
    ours, triton_built = (kernel_sass(code)[name] for code in (cubin, compiled.asm["cubin"]))
    assert [i.text for i in ours.instructions] == [i.text for i in triton_built.instructions]
    with pytest.raises(ValueError, match="PTX targets sm_90a, not sm_80"):
        assemble_ptx(compiled.asm["ptx"], "sm_80")
