"""The GPU day's phases, one per process: ``python -m harness.gpuday.phases NAME --output DIR
--scratch DIR --budget SECONDS [--dry-run]`` (``harness.gpuday.day`` starts them).

Each phase records into ``SCRATCH/NAME.json`` as it goes (``Recorder``): a status, a one-line
summary and its results. What it runs is chosen by declared properties: ``gpu_implementations``
are the registered implementations that declare the ``cuda`` device.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from harness.files import write_text_atomically
from harness.gpuday.counters import COUNTERS_MACHINE, COUNTERS_STAGE
from harness.gpuday.day import FAILED, PASSED, SKIPPED, summary_markdown

ROOT = Path(__file__).resolve().parents[2]
#: Packages whose versions the env phase records (absent ones are recorded as absent).
PACKAGES = ("torch", "cupy-cuda13x", "cupy-cuda12x", "numba", "numba-cuda", "cuda-core", "cuda-bindings", "cuda-python",
            "nvidia-cuda-nvrtc", "nvidia-nvvm", "nvidia-nvjitlink", "triton", "pytest-benchmark", "pandas", "matplotlib",
            "tabulate", "rich")  # fmt: skip
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
#: ncu metrics of the counters phase: DRAM bytes, achieved occupancy, shared-memory bank
#: conflicts, pipe utilisation; the WarpStateStats section adds the stall reasons.
NCU_METRICS = (
    "dram__bytes_read.sum", "dram__bytes_write.sum", "sm__warps_active.avg.pct_of_peak_sustained_active",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum", "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum", "smsp__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active",
    "smsp__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active", "smsp__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active",
    "gpu__time_duration.sum",
)  # fmt: skip


class Recorder:
    """A phase's record, rewritten atomically after every addition (a stopped phase keeps it)."""

    def __init__(self, path: Path, budget: float):
        self.path, self.deadline = path, time.monotonic() + budget
        self.record = {"status": PASSED, "summary": "", "results": {}}
        self.save()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, key: str, value) -> None:
        self.record["results"][key] = value
        self.save()

    def append(self, key: str, value) -> None:
        self.record["results"].setdefault(key, []).append(value)
        self.save()

    def finish(self, status: str, summary: str) -> None:
        self.record.update(status=status, summary=summary)
        self.save()

    def save(self) -> None:
        write_text_atomically(self.path, json.dumps(self.record, indent=1, default=str) + "\n")


def gpu_implementations():
    """Every registered implementation that declares the ``cuda`` device, by name."""
    from harness.registry import implementations

    return [impl for _, impl in sorted(implementations().items()) if "cuda" in impl.devices]


def _device(dry_run: bool) -> str:
    return "cpu" if dry_run else "cuda"


def _run(command: list[str], timeout: float, env: dict | None = None) -> dict:
    """A subprocess's outcome as a record: command, return code, seconds, output tail. At
    ``timeout`` it gets SIGINT first (pytest still writes its JSON), SIGKILL 5 s later."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    except OSError as error:
        return {"command": shlex.join(command), "returncode": "not started", "seconds": 0.0, "output_tail": f"{type(error).__name__}: {error}"}
    try:
        out, _ = process.communicate(timeout=max(1.0, timeout))
        rc = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, _ = process.communicate()
        rc = "timed out"
    print(f"$ {shlex.join(command)}\n{out}", flush=True)
    return {"command": shlex.join(command), "returncode": rc, "seconds": round(time.monotonic() - started, 1), "output_tail": out[-3000:]}


def _attempt(fn):
    """``fn()``'s value, or the error as a string (one probe's failure never stops the phase)."""
    try:
        return fn()
    except Exception as error:  # a missing library or device is a finding, recorded
        return f"unavailable: {type(error).__name__}: {error}"


# ----------------------------------------------------------------------------- env
def _ptx_version(text: str) -> str | None:
    match = re.search(r"^\s*\.version\s+(\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


def _nvrtc_ptx(dry_run: bool) -> dict:
    """The PTX ISA NVRTC emits for the device's architecture (NVRTC alone, no driver needed),
    and on a GPU whether the driver JITs it (a newer ISA than the driver knows is refused)."""
    from cuda.bindings import nvrtc

    arch = "sm_90"
    if not dry_run:
        import torch

        major, minor = torch.cuda.get_device_capability()
        arch = f"sm_{major}{minor}"
    source = b'extern "C" __global__ void probe(float* x) { x[threadIdx.x] += 1.0f; }'
    _, program = nvrtc.nvrtcCreateProgram(source, b"probe.cu", 0, [], [])
    (status,) = nvrtc.nvrtcCompileProgram(program, 1, [f"--gpu-architecture=compute_{arch[3:]}".encode()])
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC could not compile the probe: {status}")
    _, size = nvrtc.nvrtcGetPTXSize(program)
    buffer = b" " * size
    nvrtc.nvrtcGetPTX(program, buffer)
    text = buffer.rstrip(b"\0 ").decode()
    found = {"arch": arch, "nvrtc_emits_ptx_isa": _ptx_version(text)}
    if not dry_run:  # does this driver JIT what NVRTC emits?
        from harness.cudac.core import cuda_core

        found["driver_accepts_it"] = _attempt(lambda: bool(cuda_core().ObjectCode.from_ptx(text).get_kernel("probe")))
    return found


def _nvvm(dry_run: bool) -> dict:
    if dry_run:
        return {"skipped": "Numba's simulator has no NVVM (a dry run)"}
    from numba import cuda
    from numba.cuda.cudadrv import nvvm

    found = {"nvvm_version": ".".join(map(str, nvvm.NVVM().get_version()))}

    def kernel(x):
        x[0] = 1.0

    ptx, _ = cuda.compile_ptx(kernel, "(float32[::1],)")
    found["nvvm_emits_ptx_isa"] = _ptx_version(ptx)
    return found


def _nvidia_smi() -> dict | str:
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return "nvidia-smi not on PATH"
    fields = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,temperature.gpu"
    done = subprocess.run([tool, f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    return dict(zip(fields.split(","), (v.strip() for v in done.stdout.strip().split(",")))) if done.returncode == 0 else done.stderr


def _gpu(device: str) -> dict | str:
    import torch

    if device == "cpu":
        return "a dry run: no GPU is used"
    p = torch.cuda.get_device_properties(0)
    found = {"name": p.name, "sm_count": p.multi_processor_count, "capability": f"{p.major}.{p.minor}",
             "memory_gib": round(p.total_memory / 2**30, 1)}  # fmt: skip
    for name in ("L2_cache_size", "clock_rate", "memory_clock_rate", "shared_memory_per_block_optin"):
        if hasattr(p, name):
            found[name] = getattr(p, name)
    from cuda.bindings import driver

    found["driver_cuda_version"] = driver.cuDriverGetVersion()[1]
    return found


def phase_env(rec: Recorder, dry_run: bool) -> None:
    import torch

    from harness import machine

    device = _device(dry_run)
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    rec.add("python", sys.version.split()[0])
    rec.add("packages", versions)
    rec.add("torch_cuda", torch.version.cuda)
    rec.add("gpu", _attempt(lambda: _gpu(device)))
    rec.add("nvidia_smi", _attempt(_nvidia_smi))
    rec.add("nvrtc", _attempt(lambda: ".".join(map(str, __import__("cuda.bindings.nvrtc", fromlist=["x"]).nvrtcVersion()[1:]))))
    rec.add("ptx", _attempt(lambda: _nvrtc_ptx(dry_run)))
    rec.add("nvvm", _attempt(lambda: _nvvm(dry_run)))
    rec.add("nvjitlink", _attempt(lambda: ".".join(map(str, __import__("cuda.bindings.nvjitlink", fromlist=["x"]).version()))))
    rec.add("implementations", {impl.name: dataclasses.asdict(impl.runs_on(device)) for impl in gpu_implementations()})
    target = torch.device(device)
    copy_mib, gemm = (64, 512) if dry_run else (2048, 8192)
    gbps = _attempt(lambda: machine.probe_gbps(target, megabytes=copy_mib, repeats=5 if dry_run else 20))
    gflops = _attempt(lambda: machine.probe_gflops(target, size=gemm, repeats=3 if dry_run else 10))
    rec.add("ceilings", {"copy_gbps": gbps, "fp32_gemm_gflops": gflops})
    problems = [k for k, v in (("copy", gbps), ("gemm", gflops)) if isinstance(v, str)]
    if not dry_run and not torch.cuda.is_available():
        rec.finish(FAILED, "no CUDA device: torch.cuda.is_available() is False")
    elif problems:
        rec.finish(FAILED, f"the ceiling probes failed: {', '.join(problems)}")
    else:
        rec.finish(PASSED, f"{device}: copy {gbps[0]:.0f} GB/s, FP32 GEMM {gflops[0]:.0f} GFLOP/s (TF32 off); "
                           f"torch {versions['torch']}, {len(gpu_implementations())} CUDA implementations")  # fmt: skip


# ----------------------------------------------------------------------------- correctness
def stage_cases(dry_run: bool):
    """(case, batches): the SW-tiny and SW-small stage layers (dense, batch 1 in their suites)
    at B=1 and B=64; in a dry run one small layer at B=1 and B=2 (host builds and the simulator are slow)."""
    from harness.cases import Case, load_cases

    if dry_run:
        return [Case("dry-k7", 7, 3, 4, 2, 1, 7, 6, tables="random", seed=2, sparsity=0.3, suite="gpu_day")], (1, 2)
    stages = [case for case in load_cases(suites=["sw_tiny", "sw_small"]) if re.fullmatch(r"(tiny|small)-s\d", case.name)]
    return stages, (1, 64)


def _layer_check(impl, device: str, dry_run: bool) -> str:
    """The network path: a reparameterized SW layer (its small weight an nn.Parameter that
    requires grad) through the custom op, against the same layer on the reference path."""
    import copy

    import torch

    from harness.models.bench import randomize_for_check, verify_network
    from harness.models.layers import ShiftwiseConv2d

    channels, big_kernel, size = (6, 7, 5) if dry_run else (64, 13, 28)
    layer = ShiftwiseConv2d(channels, channels, big_kernel, 3, impl=impl.name)
    randomize_for_check(layer, 0)
    layer.reparameterize()
    reference = copy.deepcopy(layer)
    reference.impl = "reference"
    assert layer.small_weight().requires_grad, "the layer's weight should be an nn.Parameter that requires grad"
    x = torch.randn(2, channels, size, size, dtype=torch.float64, device=device)
    with torch.no_grad():
        return verify_network(layer.to(device), reference.to(device), x)


#: The known cheat that exists on CUDA only (tests/bad_impls/cheat_side_stream.py): its outputs
#: are written on a side stream after the call returns; the check must catch it.
SIDE_STREAM_CHEAT = Path("tests") / "bad_impls"


def _side_stream_cheat(device: str) -> dict:
    """Is the side-stream cheat caught on this device? PASSED when the check fails it as a cheat."""
    from harness.cases import Case
    from harness.checking import CheckCase, check
    from harness.registry import discover

    impl = discover(SIDE_STREAM_CHEAT).implementations.get("cheat_side_stream")
    if impl is None:
        return {"status": FAILED, "detail": f"cheat_side_stream not found in {SIDE_STREAM_CHEAT}"}
    if reason := impl.unavailable_reason(device):
        return {"status": SKIPPED, "detail": f"cheat_side_stream needs CUDA: {reason}"}
    case = Case(name="side-stream", big_kernel=13, small_kernel=3, channels=8, groups=2, batch=2, height=16, width=16)
    result = check(impl, CheckCase(case, "float32", "exact", device=device), gradients=False)
    caught = any(failure.kind == "cheat" for failure in result.failures)
    return {"status": PASSED if caught else FAILED, "detail": result.report()}


def phase_correctness(rec: Recorder, dry_run: bool) -> None:
    from harness.checking import CheckCase, check

    device = _device(dry_run)
    cases, batches = stage_cases(dry_run)
    impls = gpu_implementations()
    counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    reached = True
    for batch in batches:  # batch 1 first: whatever the budget leaves, every shape is seen once
        for case in cases:
            for dtype in ("float32", "float64"):
                for mode in ("exact", "float"):
                    if rec.left() < (35 if dry_run else 50):  # what the network path and swbench check need
                        reached = False
                        break
                    check_case = CheckCase(dataclasses.replace(case, batch=batch), dtype, mode, device=device)
                    for impl in impls:
                        result = check(impl, check_case, gradients=impl.autograd and batch == min(batches))
                        status = SKIPPED if result.skipped else FAILED if result.failures else PASSED
                        counts[status] += 1
                        rec.append("checks", {"implementation": impl.name, "case": case.name, "batch": batch, "dtype": dtype,
                                              "mode": mode, "status": status,
                                              "detail": result.skipped or (result.report() if result.failures else "")})  # fmt: skip
    for impl in impls:
        reason = impl.unavailable_reason(device)
        outcome = {"status": SKIPPED, "detail": reason} if reason else None
        if outcome is None:
            try:
                outcome = {"status": PASSED, "detail": _layer_check(impl, device, dry_run)}
            except Exception as error:
                outcome = {"status": FAILED, "detail": f"{type(error).__name__}: {error}"}
        counts[outcome["status"]] += 1
        rec.append("network_path", {"implementation": impl.name, **outcome})
    rec.add("side_stream_cheat", outcome := _side_stream_cheat(device))
    counts[outcome["status"]] += 1
    # swbench check on its quick tier (a dry run: one small case), with what the budget leaves
    names = [arg for impl in impls for arg in ("--impl", impl.name)]
    command = [sys.executable, "-m", "harness.cli", "check", "--device", device, *names, "--jobs", "1"]
    command += ["--case", "big_kernel=7 small_kernel=3 channels=4 groups=2 batch=1 height=8 width=8", "--no-grad"] if dry_run else ["--tier", "quick"]
    check_run = _run(command, rec.left() - 5) if rec.left() > 15 else {"returncode": "not started", "detail": "no budget left"}
    rec.add("swbench_check", check_run)
    failed = counts[FAILED] + (check_run["returncode"] not in (0,))
    summary = (f"{counts[PASSED]} passed, {counts[FAILED]} failed, {counts[SKIPPED]} skipped (checks and network path) "
               f"over {len(impls)} CUDA implementations on {device}; swbench check: rc {check_run['returncode']}"
               + ("" if reached else "; the budget ran out before every check"))  # fmt: skip
    rec.finish(FAILED if failed or not counts[PASSED] else PASSED, summary)


# ----------------------------------------------------------------------------- sanitizers, counters
def _driver_command(device: str, stage: str | None = None, impls: list[str] | None = None) -> list[str]:
    command = [sys.executable, "-m", "harness.gpuday.kernels", "--device", device]
    return command + (["--stage", stage] if stage else []) + [arg for name in impls or [] for arg in ("--impl", name)]


def sanitizer_commands() -> list[list[str]]:
    return [["compute-sanitizer", "--tool", tool, "--error-exitcode", "9", *(["--racecheck-report", "all"] if tool == "racecheck" else []),
             *_driver_command("cuda")] for tool in SANITIZER_TOOLS]  # fmt: skip


def _errors_of(output: str) -> int | None:
    match = re.search(r"ERROR SUMMARY: (\d+) error", output)
    return int(match.group(1)) if match else None


def phase_sanitizers(rec: Recorder, dry_run: bool) -> None:
    env = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}  # every allocation its own: out-of-bounds accesses land outside
    commands = sanitizer_commands()
    if dry_run:
        rec.add("commands", [f"PYTORCH_NO_CUDA_MEMORY_CACHING=1 {shlex.join(c)}" for c in commands])
        for command in commands:
            print("would run:", shlex.join(command), flush=True)
        driver = _run(_driver_command("cpu"), rec.left() - 2, env)
        rec.add("driver", driver)
        status = PASSED if driver["returncode"] == 0 else FAILED
        rec.finish(status, f"dry run: {len(commands)} compute-sanitizer command lines recorded (not run); "
                           f"their kernel driver on the CPU: rc {driver['returncode']}")  # fmt: skip
        return
    if shutil.which("compute-sanitizer") is None:
        rec.finish(FAILED, "compute-sanitizer is not on PATH")
        return
    bad = []
    for index, command in enumerate(commands):
        run = _run(command, rec.left() / (len(commands) - index) - 1, env)
        run["errors"] = _errors_of(run["output_tail"])
        rec.append("runs", run)
        if run["returncode"] != 0 or run["errors"]:
            bad.append(f"{command[2]} (rc {run['returncode']}, {run['errors']} errors)")
    rec.finish(FAILED if bad else PASSED, ("clean: " + ", ".join(SANITIZER_TOOLS)) if not bad else "reports or failures: " + "; ".join(bad))


def ncu_command(output: Path) -> list[str]:
    return ["ncu", "--clock-control", "none", "--target-processes", "all", "--metrics", ",".join(NCU_METRICS),
            "--section", "WarpStateStats", "--csv", "--page", "raw", "--log-file", str(output),
            *_driver_command("cuda", stage=COUNTERS_STAGE)]  # fmt: skip


def estimate_command(output: Path) -> list[str]:
    """The faithful counter estimates at the counters' stage (NVRTC and nvdisasm, no GPU): run beside ncu."""
    return [sys.executable, "-m", "harness.gpuday.counters", "estimate", "--case", COUNTERS_STAGE, "--machine", COUNTERS_MACHINE,
            "--output", str(output)]  # fmt: skip


def write_comparison(rec: Recorder, ncu_text: str, estimates: list[dict]) -> list[dict]:
    """ncu's numbers beside the estimates, metric by metric, into the record and ``OUTPUT/counters.md``."""
    from harness.gpuday import counters

    rows = counters.compare(counters.parse_ncu(ncu_text), estimates)
    rec.add("comparison", rows)
    output = getattr(rec, "output", None)
    if output is not None:
        write_text_atomically(Path(output) / "counters.md", f"# Counters at {COUNTERS_STAGE}: measured (ncu) / estimated\n\n" + counters.markdown(rows))
    return rows


def phase_counters(rec: Recorder, dry_run: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        csv_path, estimates_path = Path(scratch) / "ncu.csv", Path(scratch) / "estimates.json"
        command, estimating = ncu_command(csv_path), estimate_command(estimates_path)
        if dry_run:
            rec.add("command", shlex.join(command))
            rec.add("estimate_command", shlex.join(estimating))
            print("would run:", shlex.join(command), flush=True)
            print("and beside it:", shlex.join(estimating), flush=True)
            first = gpu_implementations()[:1]  # the sanitizers' dry run already ran every one
            driver = _run(_driver_command("cpu", impls=[impl.name for impl in first]), rec.left() - 2)
            rec.add("driver", driver)
            rec.finish(PASSED if driver["returncode"] == 0 else FAILED,
                       f"dry run: the ncu and estimate command lines recorded (not run); its kernel driver on the CPU: rc {driver['returncode']}")  # fmt: skip
            return
        if shutil.which("ncu") is None:
            rec.finish(FAILED, "ncu is not on PATH")
            return
        # The estimates need no GPU: they are computed while ncu runs.
        beside = subprocess.Popen(estimating, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        run = _run(command, rec.left() - 8)
        rec.add("run", run)
        text = csv_path.read_text(errors="replace") if csv_path.exists() else ""
        if text and getattr(rec, "output", None) is not None:  # kept: the comparison can be redone off the GPU
            write_text_atomically(Path(rec.output) / "ncu.csv", text)
        measured = _parse_ncu_csv(text)
        rec.add("measured", measured)
        try:
            log, _ = beside.communicate(timeout=max(1.0, rec.left() - 3))
        except subprocess.TimeoutExpired:
            beside.kill()
            log, _ = beside.communicate()
        made = json.loads(estimates_path.read_text()) if estimates_path.exists() else {}
        estimates = made.get("estimates", [])
        rec.add("estimated", estimates or f"no estimates (rc {beside.returncode}): {log[-1500:]}")
        if made.get("errors"):  # e.g. no nvdisasm there: redo it here: python -m harness.gpuday.counters compare ncu.csv
            rec.add("estimate_errors", made["errors"])
        compared = _attempt(lambda: write_comparison(rec, text, estimates))
    kernels = sorted({row.get("Kernel Name", "?") for row in measured})
    rec.finish(PASSED if measured and run["returncode"] == 0 else FAILED,
               f"ncu at {COUNTERS_STAGE}: {len(kernels)} kernels measured (rc {run['returncode']}); "
               f"{len(compared) if isinstance(compared, list) else 0} metric rows measured / estimated in counters.md")  # fmt: skip


def _parse_ncu_csv(text: str) -> list[dict]:
    """ncu's raw CSV page (a header row, a units row, one row per kernel launch): the metrics kept."""
    import csv

    rows = [row for row in csv.reader(line for line in text.splitlines() if line.startswith('"'))]
    if len(rows) < 3:
        return []
    header, body = rows[0], rows[2:]
    keep = {"Kernel Name", "Block Size", "Grid Size", *NCU_METRICS}
    keep |= {name for name in header if name.startswith("smsp__average_warp_latency_issue_stalled") or "warps_issue_stalled" in name}
    return [{name: value for name, value in zip(header, row) if name in keep} for row in body]


# ----------------------------------------------------------------------------- benchmarks
def _benchmark(rec: Recorder, dry_run: bool, name: str, selection: list[str], extra: list[str], cudnn_benchmark: bool = False,
               tests: str = "tests/test_benchmarks.py") -> None:
    """A pytest-benchmark run into ``OUTPUT/runs/NAME.json``, recorded with its outcome."""
    output = Path(rec.output) / "runs" / f"{name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    args = [tests, "--benchmark-only", "-p", "no:randomly", "-p", "no:cacheprovider", "-q", f"--benchmark-json={output}",
            "--bench-device", _device(dry_run), *selection, *extra, *_measured_peaks(Path(rec.output))]  # fmt: skip
    if importlib.util.find_spec("xdist"):
        args += ["-n", "0"]
    prelude = "import sys, torch; torch.backends.cudnn.benchmark = True; " if cudnn_benchmark else "import sys; "
    command = [sys.executable, "-c", prelude + "import pytest; sys.exit(pytest.main(sys.argv[1:]))", *args]
    run = _run(command, rec.left() - 3)
    rec.add("run", run)
    rows = []
    if output.exists():
        data = json.loads(output.read_text())
        for bench in data.get("benchmarks", []):
            info, stats = bench.get("extra_info", {}), bench.get("stats", {})
            rows.append({"name": bench.get("name"), "median_s": stats.get("median"), "rounds": stats.get("rounds"),
                         **{k: info[k] for k in ("timer", "host_seconds_per_call", "graph_median_s", "graph") if k in info}})  # fmt: skip
        rec.add("failures", data.get("sw", {}).get("failures"))
        rec.add("not_run", data.get("sw", {}).get("not_run"))
    rec.add("timed", rows)
    ok = run["returncode"] in (0, 5) and output.exists() and rows  # 5: pytest collected nothing
    rec.finish(PASSED if ok and run["returncode"] == 0 else FAILED,
               f"{len(rows)} timed into runs/{name}.json (pytest rc {run['returncode']})")  # fmt: skip


#: pytest -k for SW-tiny's stage 4 at batch 1, dense (the dry run's smallest real layer).
_STAGE4_B1 = "tiny-s4 and not sp0 and not b4 and not b64 and not b128"


def _measured_peaks(output: Path) -> list[str]:
    """The env phase's ceilings as the runs' roofline peaks (no probe per run), when it measured them."""
    try:
        day = json.loads((output / "gpu-day.json").read_text())
        (env,) = [p for p in day["phases"] if p["name"] == "env"]
        ceilings = env["results"]["ceilings"]
        return [f"--peak-gbps={ceilings['copy_gbps'][0]:.1f}", f"--peak-gflops={ceilings['fp32_gemm_gflops'][0]:.1f}"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return []


def _names_expression(names) -> str:
    return "(" + " or ".join(sorted(names)) + ")"


def phase_timing(rec: Recorder, dry_run: bool) -> None:
    from harness.bench import computations
    from harness.registry import Role

    quick = [c for c in computations() if c.peer is None or c.peer.tier == "quick"]
    chosen = [c.name for c in quick if "cuda" in c.devices]
    if dry_run:  # the CUDA implementations (emulated here: listed as not timed, with the reason) and one peer
        chosen = [c.name for c in quick if c.implementation is not None and "cuda" in c.devices]
        chosen += [c.name for c in quick if c.peer is not None][:1]
        selection = ["--suite", "sw_tiny", "--tier", "quick", "-k", f"{_names_expression(chosen)} and {_STAGE4_B1}"]
        extra = ["--benchmark-max-time=0.02", "--benchmark-min-rounds=2", "--benchmark-warmup=off", "--gpu-graph"]
    else:
        selection = ["--suite", "sw_tiny", "--tier", "full", "-k", f"{_names_expression(chosen)} and (b64 or b128)"]
        extra = ["--benchmark-max-time=0.1", "--benchmark-min-rounds=10", "--l2-flush", "--gpu-graph"]
    rec.add("roles", {c.name: c.role.value for c in quick if c.name in chosen and c.role is not Role.OTHER_OPERATOR})
    _benchmark(rec, dry_run, "timing", selection, extra)


#: The peers phase's stages: every eager peer at each (B=64), the compiled ones at the first only
#: (a compile per shape: seconds each on the GPU machine, so they come last, in their order).
PEER_STAGES = ("tiny-s1-b64", "tiny-s2-b64", "tiny-s3-b64", "tiny-s4-b64")


def _exact(names, device: str) -> str:
    """pytest -k for exactly these computations on ``device`` (``[name-device`` opens each item's
    id, so ``rep_merged`` does not also select ``compiled_rep_merged``)."""
    return "(" + " or ".join(f"[{name}-{device}-" for name in sorted(names)) + ")"


def peer_choice(dry_run: bool) -> tuple[list[str], list[str], dict[str, str]]:
    """(eager, compiled, not timed here with why): the peers a GPU user would pick, every peer
    that is not another operator (the PyTorch ways and the lower-precision rows), by declared
    role; the compiled ones need a minute per shape on a small CPU, so a dry run leaves them out."""
    from harness.bench import computations
    from harness.registry import Role

    device = _device(dry_run)
    chosen = [c for c in computations() if c.peer is not None and c.role is not Role.OTHER_OPERATOR]
    left = {c.name: why for c in chosen if (why := c.peer.unavailable(device)) is not None}
    if dry_run:
        left |= {c.name: "a dry run: torch.compile takes about a minute per shape on a small CPU (tests/test_peers.py compiles each once)"
                 for c in chosen if c.peer.compiled}  # fmt: skip
    eager = [c.name for c in chosen if not c.peer.compiled and c.name not in left]
    compiled = [c.name for c in chosen if c.peer.compiled and c.name not in left]
    return eager, compiled, left


def phase_peers(rec: Recorder, dry_run: bool) -> None:
    """What a GPU user would pick, under ``cudnn.benchmark`` autotuning: the merged convs in NCHW
    (torch's native depthwise kernel) and channels_last (cuDNN), the deployed merged form, the
    compiled merged and naive forms (default and max-autotune), the FP16 / BF16 rows (their role
    says lower precision: the report never takes them for a PyTorch way of the FP32 operator)."""
    from harness.bench import computations

    device = _device(dry_run)
    eager, compiled, left = peer_choice(dry_run)
    rec.add("chosen", {"eager": eager, "compiled": compiled})
    rec.add("not_timed_here", left)
    rec.add("roles", {c.name: c.role.value for c in computations() if c.name in eager + compiled})
    if not eager + compiled:
        rec.finish(SKIPPED, "no peer to time here")
        return
    if dry_run:  # SW-tiny's smallest stage at batch 1 (the GPU's batch 64 is minutes on a small CPU)
        expression = f"{_exact(eager, device)} and {_STAGE4_B1.replace('s4', 's3')}"
        extra = ["--benchmark-max-time=0.02", "--benchmark-min-rounds=2", "--benchmark-warmup=off"]
    else:
        stages = "(" + " or ".join(f"{stage}]" for stage in PEER_STAGES) + ")"
        expression = f"({_exact(eager, device)} and {stages})"
        if compiled:
            expression += f" or ({_exact(compiled, device)} and {PEER_STAGES[0]}])"
        extra = ["--benchmark-max-time=0.1", "--benchmark-min-rounds=10", "--l2-flush", "--gpu-graph"]
    _benchmark(rec, dry_run, "peers", ["--suite", "sw_tiny", "--tier", "full", "-k", expression], extra, cudnn_benchmark=True)
    timed = {row["name"].split("[", 1)[1].split(f"-{device}-", 1)[0] for row in rec.record["results"].get("timed", [])}
    if missing := [name for name in eager + compiled if name not in timed]:
        rec.add("not_reached", missing)  # the budget ran out first (the compiled ones come last), or it failed: see failures
        rec.finish(rec.record["status"], rec.record["summary"] + f"; not timed: {', '.join(missing)}")


def phase_networks(rec: Recorder, dry_run: bool) -> None:
    if dry_run:  # SW-tiny's merged form at batch 1 (an SW network through an implementation is minutes at 224 here)
        selection = ["--suite", "models", "--tier", "quick", "-k", "sw_tiny_rep-b1"]
    else:
        names = [impl.name for impl in gpu_implementations()]
        selection = ["--suite", "models", "--tier", "full", "-k",
                     f"(b64 or b128) and (sw_tiny_rep or slak_tiny or unireplknet_tiny or (sw_tiny and {_names_expression(names)}))"]  # fmt: skip
    if not selection:
        rec.finish(SKIPPED, "no implementation runs a network here")
        return
    _benchmark(rec, dry_run, "networks", selection, [], tests="tests/test_model_benchmarks.py")


# ----------------------------------------------------------------------------- report
def phase_report(rec: Recorder, dry_run: bool) -> None:
    output = Path(rec.output)
    runs = sorted((output / "runs").glob("*.json"))
    day = json.loads((output / "gpu-day.json").read_text()) if (output / "gpu-day.json").exists() else {}
    notes_text = summary_markdown(day)
    usable = [run for run in runs if _has_benchmarks(run)]
    if not usable:
        write_text_atomically(output / "gpu-day.md", notes_text)
        rec.finish(FAILED, "no benchmark run with timings to report; the phase summary is in gpu-day.md")
        return
    with tempfile.TemporaryDirectory() as scratch:
        notes = Path(scratch) / "notes.md"
        notes.write_text(notes_text)
        report = Path(scratch) / "report" / "report.md"
        command = [sys.executable, "-m", "harness.cli", "report", *map(str, usable), "--output", str(report),
                   "--notes", str(notes), "--title", "The GPU day" + (" (dry run on the CPU)" if dry_run else "")]  # fmt: skip
        run = _run(command, rec.left() - 3)
        rec.add("run", run)
        if run["returncode"] == 0 and report.exists():
            shutil.copy(report, output / "report.md")
            with tarfile.open(output / "report-files.tar.gz", "w:gz") as archive:
                for file in sorted(report.parent.iterdir()):
                    archive.add(file, arcname=file.name)
            rec.finish(PASSED, f"report.md from {len(usable)} runs (plots in report-files.tar.gz)")
            return
    write_text_atomically(output / "gpu-day.md", notes_text)
    rec.finish(FAILED, f"swbench report failed (rc {run['returncode']}; e.g. tabulate missing): render it here with "
                       f"`swbench report {' '.join('runs/' + r.name for r in usable)}`; the phase summary is in gpu-day.md")  # fmt: skip


def _has_benchmarks(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("benchmarks"))
    except (OSError, ValueError):
        return False


PHASE_FUNCTIONS = {"env": phase_env, "correctness": phase_correctness, "sanitizers": phase_sanitizers, "timing": phase_timing,
                   "peers": phase_peers, "counters": phase_counters, "networks": phase_networks, "report": phase_report}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.gpuday.phases", description=__doc__)
    parser.add_argument("phase", choices=sorted(PHASE_FUNCTIONS))
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--budget", type=float, required=True, help="seconds this phase may take")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    rec = Recorder(args.scratch / f"{args.phase}.json", args.budget)
    rec.output = args.output
    try:
        PHASE_FUNCTIONS[args.phase](rec, args.dry_run)
    except BaseException as error:  # recorded, then re-raised: the driver sees the exit status too
        rec.finish(FAILED, f"{type(error).__name__}: {error}")
        raise
    return 0 if rec.record["status"] in (PASSED, SKIPPED) else 1


if __name__ == "__main__":
    sys.exit(main())
