"""The faithful estimates: bank conflicts replayed from address patterns (checked against a
brute-force count and the textbook cases), the model's monotonicity, faithful >= lower bound on
every kernel of the project, and the counters comparison on a canned ncu CSV."""

import json

import numpy as np
import pytest

from harness import implementations
from harness.cudac import banks, faithful
from harness.cudac.kernel_table import estimate_table, kernel_table
from harness.gpuday import counters
from harness.gpuday.phases import COUNTERS_STAGE, Recorder, write_comparison

LANES = np.arange(32)


def brute_force(addresses, width=4):
    """Wavefronts by the rule in words: per phase of 32 / (width / 4) lanes, the most distinct
    4-byte words any bank is asked for (a set per bank)."""
    phases = width // 4
    per_phase = 32 // phases
    total = 0
    for phase in range(phases):
        asked: dict[int, set] = {}
        for lane in range(phase * per_phase, (phase + 1) * per_phase):
            if addresses[lane] < 0:
                continue
            for word in range(addresses[lane] // 4, addresses[lane] // 4 + phases):
                asked.setdefault(word % 32, set()).add(word)
        total += max((len(words) for words in asked.values()), default=0)
    return total


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (4 * LANES, 1),  # stride-1 float: every lane its own bank
        (4 * 32 * LANES, 32),  # stride-32 floats: every lane bank 0, distinct words
        (4 * 2 * LANES, 2),  # stride-2: two lanes per even bank
        (np.full(32, 4 * 7), 1),  # broadcast: one word for all
        (4 * (LANES // 2), 1),  # pairs of lanes on one word: still one wavefront
        (4 * 3 * LANES, 1),  # odd stride: a permutation of the banks
        (np.where(LANES < 8, 4 * 32 * LANES, -1), 8),  # 8 active lanes on bank 0; inactive lanes ask nothing
    ],
)
def test_bank_conflicts_of_known_patterns(addresses, expected):
    assert banks.wavefronts(addresses[None])[0] == expected == brute_force(list(addresses))


def test_wide_accesses_are_split_into_phases():
    assert banks.wavefronts((8 * LANES)[None], 8)[0] == 2  # 256 bytes: two conflict-free wavefronts
    assert banks.wavefronts((16 * LANES)[None], 16)[0] == 4
    assert banks.wavefronts((16 * LANES)[None], 8)[0] == 4  # stride-2 doubles: 2-way in each half
    with pytest.raises(ValueError, match="aligned"):
        banks.wavefronts((4 * LANES)[None], 8)


def test_bank_conflicts_match_a_brute_force_count_on_random_patterns():
    rng = np.random.default_rng(5)
    for width in (4, 8, 16):
        addresses = width * rng.integers(0, 200, size=(300, 32))
        addresses[rng.random(addresses.shape) < 0.2] = -1
        assert list(banks.wavefronts(addresses, width)) == [brute_force(list(row), width) for row in addresses]


def test_a_site_counts_only_issued_requests():
    none_active = np.full(32, -1)
    s = banks.site("x", "ld", np.stack([4 * 32 * LANES, none_active, 4 * LANES]), times=10)
    assert (s.requests, s.wavefronts, s.ideal, s.conflicts) == (20, 330, 20, 310)
    assert s.ways == pytest.approx(16.5)
    with pytest.raises(ValueError, match="op"):
        banks.site("x", "load", 4 * LANES)


def test_strided_loops_cover_every_index_once():
    tid, valid = banks.warps_of(100)
    t, active = banks.strided(tid, valid, 250, 100)
    assert sorted(t[active].tolist()) == list(range(250))


def row(**overrides):
    """A kernel_table row of a simple launch: 1000 blocks of 256 threads, 4 per SM."""
    base = {"pipe_fma": 1e7, "pipe_imad": 1e6, "pipe_alu": 4e6, "pipe_uniform": 0.0, "pipe_lsu": 2e6, "pipe_other": 1e6,
            "pipe_total": 1.9e7, "l1_global": 1e6, "shared_replayed": True, "shared_ld_wavefronts": 4e6,
            "shared_st_wavefronts": 1e6, "shared_accesses": 5e6, "blocks_per_sm": 4, "threads": 256, "hot_loop_length": 40,
            "grid": 1000, "barriers_per_block": 2, "launch_dram_bytes": 1e8, "launch_reuse": (), "loads_in_flight": 4}  # fmt: skip
    return base | overrides


def test_the_estimate_grows_with_what_it_counts():
    h200 = faithful.MACHINES[2]
    base = faithful.kernel_estimate(row(), h200).seconds
    for more in ({"shared_ld_wavefronts": 4e7}, {"pipe_alu": 4e7}, {"pipe_fma": 1e8}, {"pipe_total": 1e8},
                 {"launch_dram_bytes": 1e10}, {"barriers_per_block": 2000}, {"grid": 1100}, {"loads_in_flight": 1}):  # fmt: skip
        assert faithful.kernel_estimate(row(**more), h200).seconds > base, more
    # Fewer resident warps hide less; a re-read whose working set fits in the L2 costs no DRAM.
    assert faithful.kernel_estimate(row(blocks_per_sm=1, threads=32), h200).seconds > base
    assert faithful.kernel_estimate(row(launch_reuse=((5e7, 1e6),)), h200).dram_bytes == 5e7
    assert faithful.kernel_estimate(row(launch_reuse=((5e7, 1e9),)), h200).dram_bytes == 1e8
    slower = faithful.Machine("slow", "sm_90", 66, 1.0, 128, 64, 1000, "test", 60)
    assert faithful.kernel_estimate(row(), slower).seconds > base


def test_fp32_and_integer_rates_of_the_machines():
    a100, h100, h200 = faithful.MACHINES
    assert a100.fp32_tflops == pytest.approx(19.5, rel=0.01) and h200.fp32_tflops == pytest.approx(66.9, rel=0.01)
    assert h100.int_lanes * 2 == h100.fp32_lanes and h200.l2_mb == 60 and h200.dram_gbps == 4300


@pytest.fixture(scope="module")
def frame():
    chosen = [impl for impl in implementations().values() if impl.kernel_figures is not None]
    frame, errors = kernel_table(chosen)
    assert not errors
    return frame


def test_faithful_is_at_least_the_lower_bound_everywhere(frame):
    lower = estimate_table(frame)
    table = faithful.faithful_table(frame, lower)
    assert len(table) == len(lower) > 0
    for gpu in ("A100", "H100"):
        assert (table[f"{gpu} faithful (us)"] >= table[f"{gpu} lower bound (us)"]).all()
    assert (table["H200 faithful (us)"] > 0).all() and (table["bank ways"] >= 1).all()


def test_replayed_sites_are_declared_for_the_shared_memory_kernels(frame):
    launched = frame[(frame["case"] != "") & frame["kernel"].isin(["sw_onepass_f32", "sw_fused_rows_f32", "rows_kernel"])]
    assert launched["shared_replayed"].all() and (launched["shared_ld_requests"] > 0).all()
    # cupy_onepass's SASS pairs its conv loads (LDS.64) where the map is compile-time.
    assert (frame["pipe_total"].dropna() > 0).all()


def test_counter_estimates_carry_every_metric(frame):
    rows = faithful.counter_estimates(frame, COUNTERS_STAGE, faithful.MACHINES[2])
    assert {r["kernel"] for r in rows} >= {"sw_onepass_f32", "sw_fused_rows_f32", "sw_fused_columns_f32", "sw_scatter_f32", "rows_kernel"}
    for r in rows:
        assert set(faithful.COUNTER_METRICS) <= set(r)
        assert r["gpu__time_duration.sum"] > 0 and 0 < r["sm__warps_active.avg.pct_of_peak_sustained_active"] <= 100


CANNED = "\n".join([
    "==PROF== Connected to process 1",
    '"ID","Kernel Name","dram__bytes_read.sum","dram__bytes_write.sum","gpu__time_duration.sum",'
    '"l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum","sm__warps_active.avg.pct_of_peak_sustained_active"',
    '"","","Mbyte","Kbyte","usecond","","%"',
    '"0","sw_onepass_f32","40.5","12,000","300","1,000,000","50"',
    '"1","sw_onepass_f32","39.5","12,000","100","3,000,000","52"',
    '"2","cudapy::impls::numba_shared::rows_kernel[abi:v1]","10","0","20","0","40"',
    '"3","sw_onepass_f32_other","1","1","1","1","1"',
])  # fmt: skip


def test_ncu_csv_is_read_in_base_units():
    launches = counters.parse_ncu(CANNED)
    assert len(launches) == 4
    assert launches[0]["dram__bytes_read.sum"] == 40.5e6 and launches[0]["dram__bytes_write.sum"] == 12e6
    assert launches[0]["gpu__time_duration.sum"] == 300e3  # nanoseconds
    assert launches[1]["l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum"] == 3e6


def test_comparison_on_a_canned_ncu_csv(tmp_path):
    estimated = [
        {"implementation": "cupy_onepass", "kernel": "sw_onepass_f32", "case": COUNTERS_STAGE, "machine": "H200",
         "dram__bytes.sum": 50e6, "gpu__time_duration.sum": 250e3, "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum": 4e6,
         "sm__warps_active.avg.pct_of_peak_sustained_active": 60.0},
        {"implementation": "numba_shared", "kernel": "rows_kernel", "case": COUNTERS_STAGE, "machine": "H200",
         "dram__bytes.sum": 20e6, "gpu__time_duration.sum": 10e3},
        {"implementation": "gone", "kernel": "absent_kernel", "case": COUNTERS_STAGE, "machine": "H200", "dram__bytes.sum": 1.0},
    ]  # fmt: skip
    rec = Recorder(tmp_path / "counters.json", 60)
    rec.output = tmp_path
    rows = write_comparison(rec, CANNED, estimated)
    by = {(r["kernel"], r["metric"]): r for r in rows}
    onepass = by["sw_onepass_f32", "dram__bytes.sum"]
    # The mean over its two launches (not the _other kernel's): (40.5 + 12 + 39.5 + 12) MB / 2.
    assert onepass["launches"] == 2 and onepass["measured"] == pytest.approx(52e6) and onepass["measured / estimated"] == pytest.approx(1.04)
    assert by["sw_onepass_f32", "gpu__time_duration.sum"]["measured / estimated"] == pytest.approx(0.8)
    assert by["sw_onepass_f32", "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum"]["measured / estimated"] == pytest.approx(0.5)
    assert by["rows_kernel", "dram__bytes.sum"]["measured / estimated"] == pytest.approx(0.5)
    assert by["rows_kernel", "smsp__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active"]["measured"] is None
    assert by["absent_kernel", "dram__bytes.sum"]["launches"] == 0 and by["absent_kernel", "dram__bytes.sum"]["measured"] is None
    written = (tmp_path / "counters.md").read_text()
    assert "measured / estimated" in written and "sw_onepass_f32" in written
    assert json.loads((tmp_path / "counters.json").read_text())["results"]["comparison"] == json.loads(json.dumps(rows))


def test_the_counters_phase_writes_the_comparison_without_a_gpu(tmp_path, monkeypatch):
    """phase_counters' GPU path with ncu and the estimate run stood in: ncu's CSV is kept, the
    estimates made beside it are read, and counters.md sets one beside the other."""
    import sys

    from harness.gpuday import phases

    estimate = {"case": COUNTERS_STAGE, "machine": "H200", "errors": {}, "estimates": [
        {"implementation": "cupy_onepass", "kernel": "sw_onepass_f32", "case": COUNTERS_STAGE, "machine": "H200", "dram__bytes.sum": 26e6}]}  # fmt: skip

    def fake_run(command, timeout, env=None):
        log = command[command.index("--log-file") + 1]
        with open(log, "w") as file:
            file.write(CANNED)
        return {"command": " ".join(command), "returncode": 0, "seconds": 0.0, "output_tail": ""}

    def fake_estimates(output):
        return [sys.executable, "-c", f"import pathlib; pathlib.Path({str(output)!r}).write_text({json.dumps(estimate)!r})"]

    monkeypatch.setattr(phases.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(phases, "_run", fake_run)
    monkeypatch.setattr(phases, "estimate_command", fake_estimates)
    rec = Recorder(tmp_path / "counters.json", 60)
    rec.output = tmp_path
    phases.phase_counters(rec, dry_run=False)
    assert rec.record["status"] == "passed", rec.record["summary"]
    (row,) = [r for r in rec.record["results"]["comparison"] if r["metric"] == "dram__bytes.sum"]
    assert row["measured / estimated"] == pytest.approx(2.0)
    assert (tmp_path / "ncu.csv").read_text() == CANNED and "sw_onepass_f32" in (tmp_path / "counters.md").read_text()


def test_the_onepass_replay_agrees_with_its_sass():
    """The replayed conv issues the loads and stores per tile that the build's SASS conv loop
    holds (an independent source: nvdisasm of the NVRTC build), at every stage."""
    for figures in implementations()["cupy_onepass"].kernel_figures("sm_90"):
        (launch,) = figures.launches
        sites = {(s.name, s.op): s for s in launch.shared_sites}
        loads, stores = sites["conv: x", "ld"], sites["conv: y", "st"]
        assert loads.requests / stores.requests == pytest.approx(figures.loop_mix["LDS"] / figures.loop_mix["STS"]), figures.build
        assert loads.width == stores.width == (8 if "MAP=1" in figures.build else 4)
