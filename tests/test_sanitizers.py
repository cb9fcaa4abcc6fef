"""The host emulation's checking modes (docs/cuda-kernels.md, "Checking modes").

Each known-bad kernel of tests/cuda/known_bad.cu is caught, and for the right reason (the
message names the kernel and the kind of bug, and the sanitizers the .cu line); the correct
probe kernels run clean; and every project kernel, i.e. every implementation whose CPU
execution is a host build (found through ``harness.cudac.is_host_build``, not by name), runs
clean under every schedule and under both sanitizers on the edge cases and a layer case.

The sanitized builds run in a child process that preloads the sanitizer's runtime
(``python -m harness.cudac.sanitizers``), one per sanitizer for the known-bad kernels and one
per sanitizer for the project kernels, on small shapes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

import harness
from harness import cudac
from harness.cases import load_cases
from harness.checking import CheckCase, check
from harness.cudac import HostEmulationError, load_module, sanitizers
from harness.cudac.schedules import ENVIRONMENT as SCHEDULES_ENVIRONMENT
from harness.cudac.schedules import active_schedules, parse_schedule, schedules


from tests.cuda import known_bad

ROOT = Path(__file__).resolve().parents[1]
KNOWN_BAD = {bad.kernel: bad for bad in known_bad.KNOWN_BAD}
SANITIZERS = tuple(sanitizers.SANITIZERS)
CHILD_TIMEOUT = 1200


def _ids(bad) -> str:
    return bad.kernel


# ---- the fast build: default run and schedules ------------------------------------------------


@pytest.fixture(scope="module")
def bad_kernels():
    return load_module(known_bad.SOURCE, "cpu")


@pytest.mark.parametrize("bad", known_bad.KNOWN_BAD, ids=_ids)
def test_the_default_run_sees_only_out_of_bounds_writes(bad_kernels, bad):
    """Why the checking modes exist: in thread-index order the races pass silently; the guard
    bytes around shared memory catch the writes past its end."""
    error, _ = known_bad.launch(bad_kernels, bad.kernel)
    if bad.fast is None:
        assert error is None, f"{bad.kernel}: expected the default run to miss the bug, got {error!r}"
    else:
        assert isinstance(error, HostEmulationError) and re.search(bad.fast, str(error)), (
            f"{bad.kernel}: expected an error matching {bad.fast!r}, got {error!r}"
        )


@pytest.mark.parametrize("bad", known_bad.KNOWN_BAD, ids=_ids)
def test_schedules_catch_order_dependence(bad_kernels, bad):
    with schedules() as checked:
        error, _ = known_bad.launch(bad_kernels, bad.kernel)
    if bad.schedules is None:  # e.g. a non-atomic += of integers gives the same sum in any order
        assert error is None, f"{bad.kernel}: expected no schedule dependence, got {error!r}"
        assert checked.launches == [(known_bad.SOURCE.name, bad.kernel)]
        return
    assert isinstance(error, HostEmulationError), f"{bad.kernel}: expected a HostEmulationError, got {error!r}"
    assert f"kernel {bad.kernel}:" in str(error) and re.search(bad.schedules, str(error)), (
        f"{bad.kernel}: expected {bad.schedules!r}, got {error}"
    )


def test_schedules_leave_correct_results_of_correct_kernels():
    probes = load_module(known_bad.PROBES, "cpu")
    with schedules("forward", "reverse", "shuffle:7") as checked:
        for kernel in ("write_ids", "histogram", "block_sums", "block_sums_dynamic"):
            assert known_bad._probe(probes, kernel), f"{kernel} wrote a wrong result under the schedule check"
    assert [kernel for _, kernel in checked.launches] == ["write_ids", "histogram", "block_sums", "block_sums_dynamic"]
    assert [str(s) for s in checked.plan] == ["forward", "reverse", "shuffle:7"]


def test_a_read_of_never_written_shared_memory_is_named(tmp_path):
    path = tmp_path / "uninitialised.cu"
    path.write_text(
        'extern "C" __global__ void sum_of_unwritten(float* out) {\n'
        "    __shared__ float tile[32];\n"
        "    if (threadIdx.x > 0) tile[threadIdx.x] = 1.0f;\n"
        "    __syncthreads();\n"
        "    if (threadIdx.x == 0) out[0] = tile[0] * 0.0f;\n"  # a read of poison: NaN, or 0 * huge
        "}\n"
    )
    module = load_module(path, "cpu")
    out = torch.zeros(1)
    with schedules(), pytest.raises(HostEmulationError, match=r"kernel sum_of_unwritten: reads shared memory that no thread wrote"):
        module.launch("sum_of_unwritten", (1,), (32,), out.data_ptr())


def test_the_schedule_check_needs_tensor_memory(bad_kernels):
    x, out = (ctypes.create_string_buffer(4 * 96) for _ in range(2))
    with schedules(), pytest.raises(HostEmulationError, match=r"argument out \(0x[0-9a-f]+\) points into no live CPU tensor"):
        bad_kernels.launch("nonatomic_block_sum", (3,), (32,), ctypes.addressof(x), ctypes.addressof(out))


def test_the_heap_scan_passes_over_tensors_without_memory(bad_kernels):
    """torch.compile leaves fake tensors on the heap (as an earlier test in the same process may)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from harness.cudac.schedules import _storages

    with FakeTensorMode():
        fake = torch.empty(8)
    assert _storages([fake]) == []  # no memory behind it: not a span a kernel could write
    x, out = (ctypes.create_string_buffer(4 * 96) for _ in range(2))
    with schedules(), pytest.raises(HostEmulationError, match=r"argument out \(0x[0-9a-f]+\) points into no live CPU tensor"):
        bad_kernels.launch("nonatomic_block_sum", (3,), (32,), ctypes.addressof(x), ctypes.addressof(out))
    del fake


def test_schedules_from_the_environment(monkeypatch):
    monkeypatch.setenv(SCHEDULES_ENVIRONMENT, "forward, reverse,shuffle:3")
    assert [str(s) for s in active_schedules()] == ["forward", "reverse", "shuffle:3"]
    monkeypatch.delenv(SCHEDULES_ENVIRONMENT)
    assert [str(s) for s in active_schedules()] == ["forward"]
    with pytest.raises(ValueError, match="unknown schedule 'backward'"):
        parse_schedule("backward")
    with pytest.raises(ValueError, match="takes no seed"):
        parse_schedule("reverse:2")


def test_the_warp_synchronous_reduction_on_warp_size_is_refused():
    with pytest.raises(HostEmulationError, match=r"does not model: warp-level execution \(warpSize\)"):
        load_module(known_bad.WARP_SOURCE, "cpu")


# ---- the sanitized builds: known-bad and probe kernels ------------------------------------------


class _Children:
    """One sanitized child process per sanitizer: it runs the known-bad and probe kernels
    (tests/cuda/known_bad.py), then checks every project kernel on SANITIZER_CASES. Both start
    together, as soon as this module runs (alongside the tests in this process), and are read
    once."""

    def __init__(self):
        self.started: dict[str, sanitizers.Child] = {}
        self.read: dict[str, object] = {}

    def start(self) -> None:
        arguments = ["run", known_bad.__file__]
        for impl_name in HOST_BUILT:
            for case in SANITIZER_CASES:
                arguments += ["--check", impl_name, CheckCase(case, "float32", "exact").to_args()]
        for name in SANITIZERS:
            if sanitizers.unavailable_reason(name) is None:
                self.started[name] = sanitizers.start_child(name, arguments, cwd=ROOT)

    def _records(self, name: str) -> tuple[list[dict], list[dict]]:
        reason = sanitizers.unavailable_reason(name)
        if reason:
            pytest.skip(f"-fsanitize={name}: {reason}")
        if name not in self.read:
            done = self.started[name].result(CHILD_TIMEOUT)
            kernels = [json.loads(line[len(known_bad.PREFIX):]) for line in done.stdout.splitlines()
                       if line.startswith(known_bad.PREFIX)]  # fmt: skip
            checks = sanitizers.results(done.stdout)
            complete = len(kernels) == len(known_bad.KNOWN_BAD) + len(known_bad.PROBE_KERNELS) and len(checks) == len(
                HOST_BUILT
            ) * len(SANITIZER_CASES)
            problem = f"the {name} child stopped early (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
            self.read[name] = (kernels, checks) if complete else AssertionError(problem)
        value = self.read[name]
        if isinstance(value, AssertionError):
            raise value
        return value

    def known_bad(self, name: str) -> dict[str, dict]:
        return {record["kernel"]: record for record in self._records(name)[0]}

    def project(self, name: str) -> dict[str, list[dict]]:
        by_impl: dict[str, list[dict]] = {}
        for record in self._records(name)[1]:
            by_impl.setdefault(record["impl"], []).append(record)
        return by_impl


@pytest.fixture(scope="module", autouse=True)
def _children(request):
    children = _Children()
    # Start them as soon as this module runs, if any selected test here reads them.
    if any(item.module is request.module and "sanitized" in item.fixturenames for item in request.session.items):
        children.start()
    yield children
    for child in children.started.values():
        child.result(0)  # a child no test read (deselected) is stopped


@pytest.fixture
def sanitized(_children):
    return _children


@pytest.mark.parametrize("sanitizer", SANITIZERS)
@pytest.mark.parametrize("bad", known_bad.KNOWN_BAD, ids=_ids)
def test_sanitizers_catch_each_known_bad_kernel_for_its_bug(sanitized, sanitizer, bad):
    record = sanitized.known_bad(sanitizer)[bad.kernel]
    expected = getattr(bad, sanitizer)
    if expected is None:  # not this sanitizer's kind of bug: it must not invent a report
        assert record["error"] != "SanitizerError", f"{bad.kernel}: unexpected report under {sanitizer}: {record}"
        return
    assert record["error"] in ("SanitizerError", "HostEmulationError"), f"{bad.kernel} passed under {sanitizer}: {record}"
    assert f"kernel {bad.kernel}:" in record["message"] and re.search(expected, record["message"]), (
        f"{bad.kernel} under {sanitizer}: expected {expected!r}, got {record['message']}"
    )


@pytest.mark.parametrize("sanitizer", SANITIZERS)
def test_correct_kernels_run_clean_under_the_sanitizers(sanitized, sanitizer):
    records = sanitized.known_bad(sanitizer)
    for kernel in known_bad.PROBE_KERNELS[:-1]:
        assert records[kernel]["error"] is None and records[kernel]["correct"], f"{kernel} under {sanitizer}: {records[kernel]}"
    divergent = records["divergent_barrier"]  # threads: reported, not hung
    assert divergent["error"] == "HostEmulationError" and "divergent __syncthreads" in divergent["message"], divergent


_TSAN = """==================
WARNING: ThreadSanitizer: data race (pid=1)
  Write of size 4 at 0x7b2000473d30 by thread T67:
    #0 tiled /work/x/k.cu:23 (k-thread.so+0x4d81)
    #1 operator() /work/x/swemu-launchers-k.cpp:6 (k-thread.so+0x4d99)

  Previous read of size 4 at 0x7b2000473d30 by thread T66:
    #0 tiled /work/x/k.cu:26 (k-thread.so+0x4e01)

  Location is heap block of size 128 at 0x7b2000473d00 allocated by thread T3:
    #0 posix_memalign ../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:839 (libtsan.so+0x3ef28)
    #1 swemu::BlockMemory::allocate(unsigned long, unsigned long) harness/cudac/host_runtime.h:120 (k-thread.so+0x1)

  Thread T67 (tid=2, running) created by thread T3 at:
    #1 swemu::Team::Team(std::function<void ()> const&, dim3, dim3, unsigned int, swemu::BlockMemory&) x.h:1

SUMMARY: ThreadSanitizer: data race /work/x/k.cu:23 in tiled
==================
"""
_ASAN = """=================================================================
==7718==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x603000a53414 at pc 0x7f bp 0x7f sp 0x7f
READ of size 4 at 0x603000a53414 thread T2
    #0 0x7f36a6d24245 in gather /work/impls/k.cu:40

0x603000a53414 is located 0 bytes to the right of 20-byte region [0x603000a53400,0x603000a53414)
allocated by thread T0 here:
    #0 0x7f36c9eb89cf in __interceptor_posix_memalign ../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x7f36c7fc9179 in c10::alloc_cpu(unsigned long) (libc10.so+0x91f7e)

SUMMARY: AddressSanitizer: heap-buffer-overflow /work/impls/k.cu:40 in gather
"""


def test_reports_are_read_for_the_kind_of_bug_and_the_cu_line():
    (race,) = sanitizers.parse_reports(_TSAN)
    assert (race.kind, race.location, race.other_location) == ("data race on shared memory", "k.cu:23", "k.cu:26")
    (overflow,) = sanitizers.parse_reports(_ASAN)  # allocated by torch: a tensor, global memory
    assert (overflow.kind, overflow.location) == ("out-of-bounds global memory access (heap-buffer-overflow)", "k.cu:40")
    error = sanitizers.SanitizerError("k.cu", "tiled", race)
    assert str(error) == "k.cu: kernel tiled: ThreadSanitizer: data race on shared memory at k.cu:23 (the other access at k.cu:26)"
    assert sanitizers.parse_reports(_TSAN + _ASAN)[1].sanitizer == "AddressSanitizer"


def test_a_sanitized_build_refuses_a_process_without_its_runtime():
    with pytest.raises(HostEmulationError, match=r"only runs in a process that preloads libtsan\.so"):
        cudac.HostModule.build(cudac.CudaSource.read(known_bad.SOURCE), sanitizer="thread")


# ---- every project kernel ---------------------------------------------------------------------


def _host_built() -> list[str]:
    return sorted(name for name, impl in harness.implementations().items() if cudac.is_host_build(impl))


HOST_BUILT = _host_built()
_EDGE = load_cases(suites=["edge"])
_LAYER = next(case for case in load_cases(suites=["sw_tiny"]) if case.name == "tiny-s4")
#: Fast build, every schedule: all edge cases and the smallest layer (tiny-s4: 7 x 7, M = 13).
SCHEDULE_CASES = [*_EDGE, _LAYER]
#: Sanitized builds (a thread per CUDA thread, each access instrumented, and a build per
#: specialisation of a .cu): small shapes, the edge cases that exercise different paths
#: (pruning with k not dividing M; a map smaller than k and M) and the layer with 8 of its
#: channels (blocks are per plane: the channel count changes no code path).
SANITIZER_CASES = [
    *(case for case in _EDGE if case.name in ("M13-k3", "M51-k3-1x1-map")),
    dataclasses.replace(_LAYER, name="tiny-s4-8-channels", channels=8),
]


def _case_id(case) -> str:
    return f"{case.suite}-{case.name}"


def test_host_built_implementations_are_found():
    """The project's CUDA C kernels are found through their Execution, without naming them."""
    assert "cuda_atomic" in HOST_BUILT, f"cuda_atomic (a .cu run as a host build) not found among {HOST_BUILT}"
    assert "numba_shared" not in HOST_BUILT  # emulated on the CPU, but by Numba, not as a host build


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=_case_id)
@pytest.mark.parametrize("impl_name", HOST_BUILT)
def test_project_kernels_do_not_depend_on_the_schedule(impl_name, case):
    impl = harness.implementations()[impl_name]
    with schedules() as checked:
        result = check(impl, CheckCase(case, "float32", "exact"))
    if result.skipped:
        pytest.skip(result.report())
    plan = ",".join(str(s) for s in checked.plan)
    assert result.passed, f"{result.report()}\nUnder the schedules: {SCHEDULES_ENVIRONMENT}={plan} {result.reproducer}"
    assert checked.launches, f"{impl_name}: no launch of a host build was compared under the schedules"


@pytest.mark.parametrize("sanitizer", SANITIZERS)
@pytest.mark.parametrize("impl_name", HOST_BUILT)
def test_project_kernels_run_clean_under_the_sanitizers(sanitized, sanitizer, impl_name):
    records = sanitized.project(sanitizer)[impl_name]
    if all(record["skipped"] for record in records):
        pytest.skip(f"{impl_name}: {records[0]['skipped']}")
    problems = [
        f"{record['case']}:\n    " + "\n    ".join(record["failures"]) + f"\n  Reproduce with:\n    {record['reproducer']}"
        for record in records
        if not record["passed"] and not record["skipped"]
    ]
    assert not problems, f"{impl_name} under -fsanitize={sanitizer}:\n" + "\n".join(problems)
    for record in records:
        if not record["skipped"]:
            assert record["launches"] > 0, f"{impl_name} launched no sanitized kernel on {record['case']}"
