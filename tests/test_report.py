"""The markdown/PNG report built from saved benchmark JSON (harness/report.py), on synthetic runs."""

from __future__ import annotations

import json
from pathlib import Path
import math

import pandas as pd
import pytest
from matplotlib.figure import Figure


from harness.registry import Role
import dataclasses

from harness.results import BenchmarkRow, Failure, NetworkRow, NotRun, RunRecord
from harness.report import (
    ReportInputError,
    compare,
    load_runs,
    render_report,
    results_frame,
    sweep_parameter,
    write_report,
)

CASES = {"c1": {"big_kernel": 13, "groups": 2}, "c2": {"big_kernel": 31, "groups": 2}}
#: median seconds per (computation, case); rep_merged is the speed baseline peer
MEDIANS = {
    ("torch_roll", "c1"): 0.010, ("torch_roll", "c2"): 0.020,
    ("numba_cpu", "c1"): 0.004, ("numba_cpu", "c2"): 0.005,
    ("rep_merged", "c1"): 0.008, ("rep_merged", "c2"): 0.010,
}  # fmt: skip
PEAKS = {"gflops": 100.0, "gflops_source": "given on the command line", "gbps": 10.0, "gbps_source": "probe: copy"}


#: the roles the computations of these synthetic runs declare
ROLES = {"torch_roll": Role.PYTORCH_WAY, "rep_merged": Role.PYTORCH_WAY, "rep_cross": Role.PYTORCH_WAY,
         "slak_strips": Role.OTHER_OPERATOR}  # fmt: skip


def benchmark(
    computation: str, case: str, median: float, suite: str = "sw_small", spread: float = 0.05, **params
) -> dict:
    """One stored benchmark, its row written by the schema's owner (harness.results.BenchmarkRow)."""
    role = ROLES.get(computation, Role.IMPLEMENTATION)
    peer = computation.startswith(("rep_", "slak_"))
    fields = dict(
        computation=computation, role=role.value, baseline=computation == "rep_merged",
        description=f"{computation} description", device="cpu", execution="cpu", threads=4, dtype="float32",
        suite=suite, case=case, tier="quick", seed=0, batch=4, channels=8, height=16, width=16, big_kernel=13,
        small_kernel=3, groups=2, nk=5, sparsity=0.0, tables="random", useful_flops=2_000_000,
        flops=3_000_000 if peer else 2_000_000, compulsory_bytes=400_000,
        traffic_bytes=800_000 if computation == "torch_roll" else None, setup_seconds=None,
        verified="matches the reference within the error bound", deterministic=True,
    ) | params  # fmt: skip
    extra = BenchmarkRow(**fields).to_extra_info() | {"metrics": {"images_per_s": -1}}  # stored derived values are ignored
    stats = {"min": median * 0.9, "max": median * 1.2, "mean": median, "stddev": median * 0.01, "rounds": 20,
             "median": median, "iqr": 2 * spread * median, "q1": median * (1 - spread), "q3": median * (1 + spread),
             "ops": 1 / median, "iterations": 1}  # fmt: skip
    name = f"test_throughput[{computation}-cpu-{suite}-{case}]"
    return {"name": name, "fullname": f"tests/test_benchmarks.py::{name}", "group": f"{suite}/{case}",
            "params": {}, "stats": stats, "extra_info": extra}  # fmt: skip


def make_run(node: str = "box-a", medians: dict | None = None, benchmarks: list | None = None, peaks: dict | None = None,
             **sw) -> dict:  # fmt: skip
    medians = MEDIANS if medians is None else medians
    if benchmarks is None:
        benchmarks = [benchmark(comp, case, m, **CASES[case]) for (comp, case), m in medians.items()]
    return {
        "machine_info": {
            "node": node, "python_version": "3.11.9", "system": "Linux", "cpu": {"brand_raw": "Test CPU", "count": 4},
            "sw": {"fingerprint": f"{node} / Test CPU / no GPU",
                   "cpu": {"model": "Test CPU", "cores": 2, "threads": 4, "torch_threads": 4, "numba_threads": 4},
                   "gpu": None, "peaks": peaks or PEAKS, "software": {"python": "3.11.9", "torch": "2.13.0+cpu"}},
        },
        "commit_info": {}, "datetime": "2025-01-02T03:04:05+00:00", "version": "5.3.1", "benchmarks": benchmarks,
        "sw": RunRecord(tier="quick", suites=["sw_small"], command="pytest --benchmark-only --suite sw_small").to_json() | sw,
    }  # fmt: skip


def save(path, run: dict):
    path.write_text(json.dumps(run))
    return path


def test_metrics_are_recomputed_from_stats_counts_and_peaks(tmp_path):
    frame = results_frame(load_runs([save(tmp_path / "a.json", make_run())]))
    assert len(frame) == 6
    row = frame[(frame.computation == "torch_roll") & (frame.case == "c1")].iloc[0]
    assert row.images_per_s == pytest.approx(4 / 0.010)
    assert row.gflops == pytest.approx(2_000_000 / 0.010 / 1e9)
    assert row.gbps == pytest.approx(800_000 / 0.010 / 1e9)  # the declared traffic model
    assert row.density == pytest.approx(2.5) and row.compulsory_density == pytest.approx(5.0)
    # The roofline's time is the larger of 2e6 FLOP at 100 GFLOP/s (20 us) and 400 kB of compulsory
    # bytes at 10 GB/s (40 us): memory-bound, 40 us of the 10 ms median.
    assert row.pct_roofline == pytest.approx(100 * 40e-6 / 0.010) and row.bound == "memory"
    assert row.speedup == pytest.approx(0.008 / 0.010)  # rep_merged median / this median
    numba_c2 = frame[(frame.computation == "numba_cpu") & (frame.case == "c2")].iloc[0]
    assert numba_c2.speedup == pytest.approx(2.0)
    peer = frame[(frame.computation == "rep_merged") & (frame.case == "c1")].iloc[0]
    assert peer.gflops == pytest.approx(3_000_000 / 0.008 / 1e9) and peer.speedup == pytest.approx(1.0)
    # deterministic order: suite, case, role (implementations, then PyTorch ways), computation
    first = [("c1", "numba_cpu"), ("c1", "rep_merged"), ("c1", "torch_roll")]
    assert list(zip(frame.case, frame.computation))[:3] == first


def test_missing_baseline_and_peaks_are_shown_as_missing_not_as_numbers(tmp_path):
    run = make_run(medians={("torch_roll", "c1"): 0.01})
    run["machine_info"]["sw"]["peaks"] = {"gflops": None, "gflops_source": "-", "gbps": None, "gbps_source": "-"}
    path = save(tmp_path / "a.json", run)
    frame = results_frame(load_runs([path]))
    assert math.isnan(frame.speedup[0]) and pd.isna(frame.pct_roofline[0])
    line = next(line for line in render_report([path]).markdown.splitlines() if "| torch_roll" in line)
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[-2:] == ["—", "—"] and "-1" not in line and "nan" not in line.lower()


def test_same_input_renders_identical_markdown_and_pngs(tmp_path):
    path = save(tmp_path / "a.json", make_run())
    first, second = render_report([path]), render_report([path])
    assert first.markdown == second.markdown
    for heading in ("# SW operator benchmarks", "## Runs", "## Machines", "## Results", "### Suite `sw_small`",
                    "## Roofline", "## Sweeps", "## Not run", "## Failures"):  # fmt: skip
        assert f"\n{heading}\n" in f"\n{first.markdown}"
    assert "pytest --benchmark-only --suite sw_small" in first.markdown and "2025-01-02T03:04:05" in first.markdown
    assert "given on the command line" in first.markdown and "2.13.0+cpu" in first.markdown
    assert set(first.figures) == {"roofline-box-a-cpu.png"} and "](roofline-box-a-cpu.png)" in first.markdown
    out_a, out_b = tmp_path / "a" / "r.md", tmp_path / "b" / "r.md"
    write_report([path], out_a), write_report([path], out_b)
    for name in ("r.md", "r-roofline-box-a-cpu.png"):
        assert (out_a.parent / name).read_bytes() == (out_b.parent / name).read_bytes()


def test_results_table_has_per_case_rows_with_formatted_metrics(tmp_path):
    markdown = render_report([save(tmp_path / "a.json", make_run())]).markdown.split("## Results")[1]
    header = next(line for line in markdown.splitlines() if "median ms" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "case", "computation", "role", "device", "threads", "median ms", "IQR ms", "images/s", "GFLOP/s", "GB/s",
        "density", "% roofline", "speedup vs baseline"]  # fmt: skip
    row = next(line for line in markdown.splitlines() if line.startswith("| c2 ") and "numba_cpu" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:8] == ["5.00", "0.500", "800"] and cells[-1] == "2.00"


def test_write_refuses_to_overwrite_unless_asked(tmp_path):
    path = save(tmp_path / "a.json", make_run())
    output = tmp_path / "out" / "report.md"
    written = write_report([path], output)
    assert written == [output, output.parent / "report-roofline-box-a-cpu.png"]
    assert output.read_text().startswith("# SW operator benchmarks")
    image = written[1]
    image.write_bytes(b"old")  # only the PNG exists ahead: still refused, and nothing is replaced
    output.unlink()
    with pytest.raises(FileExistsError, match="report-roofline-box-a-cpu.png.*--overwrite"):
        write_report([path], output)
    assert not output.exists() and image.read_bytes() == b"old"
    write_report([path], output, overwrite=True, title="Second")
    assert image.read_bytes().startswith(b"\x89PNG") and output.read_text().startswith("# Second\n")
    assert sorted(p.name for p in output.parent.iterdir()) == ["report-roofline-box-a-cpu.png", "report.md"]


def test_no_partial_files_when_rendering_or_writing_fails(tmp_path, monkeypatch):
    good, bad = save(tmp_path / "a.json", make_run()), tmp_path / "bad.json"
    bad.write_text("{not json")
    output = tmp_path / "out" / "report.md"
    with pytest.raises(ReportInputError):
        write_report([good, bad], output)
    assert not output.parent.exists()
    output.parent.mkdir()

    def failing_savefig(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report([good], output)
    assert list(output.parent.iterdir()) == []  # no report, no image, no temporary file


def test_bad_files_give_errors_naming_the_file_and_key(tmp_path):
    plain = make_run()
    del plain["sw"], plain["machine_info"]["sw"]
    with pytest.raises(ReportInputError, match=r"plain\.json: not written by this project's benchmarks"):
        load_runs([save(tmp_path / "plain.json", plain)])
    broken = make_run()
    del broken["benchmarks"][1]["extra_info"]["compulsory_bytes"]
    with pytest.raises(ReportInputError, match=r"broken\.json: benchmark .*extra_info has no 'compulsory_bytes'"):
        load_runs([save(tmp_path / "broken.json", broken)])
    wrong = make_run()
    wrong["benchmarks"][0]["extra_info"]["flops"] = "many"
    with pytest.raises(ReportInputError, match=r"wrong\.json: benchmark .*extra_info 'flops' must be int, got 'many'"):
        load_runs([save(tmp_path / "wrong.json", wrong)])
    (tmp_path / "garbage.json").write_text("[1, 2")
    with pytest.raises(ReportInputError, match=r"garbage\.json: cannot read"):
        render_report([tmp_path / "garbage.json"])
    with pytest.raises(ReportInputError, match=r"missing\.json"):
        load_runs([tmp_path / "missing.json"])


def test_two_machines_merge_into_column_groups(tmp_path):
    slower = {key: 2 * median for key, median in MEDIANS.items()}
    paths = [save(tmp_path / "a.json", make_run("box-a")), save(tmp_path / "b.json", make_run("box-b", slower))]
    frame = results_frame(load_runs(paths))
    assert sorted(frame.machine.unique()) == ["box-a", "box-b"] and len(frame) == 12
    report = render_report(paths)
    results = report.markdown.split("## Results")[1]
    header = next(line for line in results.splitlines() if "median ms" in line)
    assert "box-a median ms" in header and "box-b median ms" in header and "box-b speedup vs baseline" in header
    rows = [line for line in results.splitlines() if line.startswith("| c1 ") and "torch_roll" in line]
    assert len(rows) == 1  # one row per (case, computation), both machines side by side
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert "10.0" in cells and "20.0" in cells
    assert set(report.figures) == {"roofline-box-a-cpu.png", "roofline-box-b-cpu.png"}
    machines = report.markdown.split("## Machines")[1].split("## Results")[0]
    assert "box-a / Test CPU / no GPU" in machines and "box-b / Test CPU / no GPU" in machines
    same_machine_twice = save(tmp_path / "c.json", make_run("box-a"))
    with pytest.raises(ReportInputError, match=r"c\.json: .*also measured in .*a\.json"):
        results_frame(load_runs([paths[0], same_machine_twice]))


def test_baseline_flags_regressions_beyond_noise_only(tmp_path):
    base = save(tmp_path / "base.json", make_run())
    changed = dict(MEDIANS)
    changed[("torch_roll", "c1")] = 0.015  # 1.5x slower: interquartile ranges far apart
    changed[("numba_cpu", "c1")] = 0.0042  # 5 % slower: inside the +-5 % interquartile range
    changed[("numba_cpu", "c2")] = 0.0025  # 2x faster
    new = save(tmp_path / "new.json", make_run(medians=changed))
    verdicts = compare(results_frame(load_runs([new])), results_frame(load_runs([base])))
    by_key = {(r.computation, r.case): (r.verdict, r.ratio) for r in verdicts.itertuples()}
    assert by_key[("torch_roll", "c1")] == ("regression", pytest.approx(1.5))
    assert by_key[("numba_cpu", "c1")][0] == "within noise"
    assert by_key[("numba_cpu", "c2")] == ("improvement", pytest.approx(0.5))
    assert by_key[("rep_merged", "c2")] == ("within noise", pytest.approx(1.0))
    markdown = render_report([new], baseline=[base]).markdown
    section = markdown.split("## Comparison with the baseline")[1]
    assert "regression: 1, improvement: 1, within noise: 4" in section
    assert any("torch_roll" in line and "regression" in line and "1.50" in line for line in section.splitlines())
    other_machine = save(tmp_path / "other.json", make_run("box-z"))
    assert "no (machine, device, case, computation) in common" in render_report([new], [other_machine]).markdown
    # Between-run noise (measured with an A/A pair) of 1.6x: the 1.5x slowdown is no longer a verdict, 2x still is.
    noisy = compare(results_frame(load_runs([new])), results_frame(load_runs([base])), noise_floor=1.6)
    by_key = {(r.computation, r.case): r.verdict for r in noisy.itertuples()}
    assert by_key[("torch_roll", "c1")] == "within noise" and by_key[("numba_cpu", "c2")] == "improvement"
    section = render_report([new], baseline=[base], noise_floor=1.6).markdown.split("## Comparison")[1]
    assert "regression: 0, improvement: 1, within noise: 5" in section and "noise floor (1.60)" in section
    with pytest.raises(ValueError, match="noise floor must be a ratio >= 1"):
        compare(results_frame(load_runs([new])), results_frame(load_runs([base])), noise_floor=0.5)


def test_sweep_parameter_detection_and_plots(tmp_path):
    benchmarks = [
        benchmark(comp, f"M{m}", median * m / 13, suite="sweep_big_kernel", big_kernel=m)
        for m in (7, 13, 31) for comp, median in (("torch_roll", 0.01), ("rep_merged", 0.008))
    ] + [benchmark("torch_roll", f"E{e}", 0.01, suite="sweep_groups", groups=e) for e in (1, 2, 4)]
    benchmarks.append(benchmark("torch_roll", "bad", 0.01, suite="sweep_mixed", groups=1, sparsity=0.0))
    benchmarks.append(benchmark("torch_roll", "bad2", 0.01, suite="sweep_mixed", groups=2, sparsity=0.5))
    path = save(tmp_path / "s.json", make_run(benchmarks=benchmarks))
    frame = results_frame(load_runs([path]))
    assert sweep_parameter(frame[frame.suite == "sweep_big_kernel"]) == "big_kernel"
    assert sweep_parameter(frame[frame.suite == "sweep_groups"]) == "groups"
    assert sweep_parameter(frame[frame.suite == "sweep_mixed"]) is None  # two parameters vary: ambiguous
    written = write_report([path], tmp_path / "rep.md")
    names = sorted(p.name for p in written)
    assert names == [
        "rep-roofline-box-a-cpu.png", "rep-sweep-sweep_big_kernel.png", "rep-sweep-sweep_groups.png", "rep.md"
    ]  # fmt: skip
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written if p.suffix == ".png")
    markdown = (tmp_path / "rep.md").read_text()
    assert "![sweep_big_kernel: images/s against big_kernel](rep-sweep-sweep_big_kernel.png)" in markdown
    assert "`sweep_mixed`: no single varying parameter" in markdown
    figure = render_report([path]).figures["sweep-sweep_big_kernel.png"]
    axes = figure.axes[0]
    assert axes.get_yscale() == "log" and axes.get_xlabel() == "big_kernel"
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert set(lines) == {"torch_roll", "rep_merged"}
    assert list(lines["torch_roll"].get_xdata()) == [7, 13, 31]
    assert list(lines["torch_roll"].get_ydata()) == pytest.approx([4 / (0.01 * m / 13) for m in (7, 13, 31)])


def test_roofline_plot_draws_the_roofs_and_a_marker_per_computation(tmp_path):
    figure = render_report([save(tmp_path / "a.json", make_run())]).figures["roofline-box-a-cpu.png"]
    axes = figure.axes[0]
    assert axes.get_xscale() == axes.get_yscale() == "log"
    lines = {line.get_label(): line for line in axes.get_lines()}
    roof = next(line for label, line in lines.items() if label.startswith("roofs"))
    for x, y in zip(roof.get_xdata(), roof.get_ydata()):
        assert y == pytest.approx(min(100.0, x * 10.0))
    assert {"numba_cpu", "torch_roll", "rep_merged"} <= set(lines)
    assert len(lines["numba_cpu"].get_xdata()) == 2  # a point per case


def test_not_run_failures_and_kernels_tables(tmp_path):
    empty = render_report([save(tmp_path / "a.json", make_run())]).markdown
    assert "## Not run\n\nnone\n" in empty and "## Failures\n\nnone\n" in empty and "ptxas" not in empty
    run = make_run(
        not_run=[dataclasses.asdict(NotRun("numba_cuda", "cuda", "no CUDA device"))],
        failures=[dataclasses.asdict(Failure("torch_roll", "cpu", "c3", "ResultMismatch: a|b"))],
        kernels=[{"implementation": "cupy_fused", "kernel": "sw_fwd", "arch": "sm_80", "registers": 40,
                  "shared_bytes": 0, "constant_bytes": None, "stack_bytes": 0, "spill_stores": 0,
                  "spill_loads": 0, "barriers": 1}],
        kernel_errors={"numba_shared": "NvrtcError: boom"},
    )  # fmt: skip
    markdown = render_report([save(tmp_path / "b.json", run)]).markdown
    not_run = markdown.split("## Not run")[1].split("##")[0]
    assert ["numba_cuda", "cuda", "no CUDA device"] in [
        [cell.strip() for cell in line.strip("|").split("|")] for line in not_run.splitlines() if line.startswith("|")
    ]
    assert "ResultMismatch: a\\|b" in markdown  # a pipe in an error does not break the table
    kernels = markdown.split("## GPU kernels (ptxas)")[1]
    assert "registers/thread" in kernels and "sw_fwd" in kernels and "numba_shared: kernels did not build" in kernels
    # A run writes no kernels now: they are `swbench kernels --json`'s artifact, merged by the report.
    from harness.report.load import kernels_json

    sw = {k: run["sw"][k] for k in ("kernels", "kernel_errors")}
    plain = make_run(not_run=run["sw"]["not_run"], failures=run["sw"]["failures"])
    artifact = tmp_path / "kernels.json"
    artifact.write_text(kernels_json(pd.DataFrame(sw["kernels"]), sw["kernel_errors"]))
    merged = render_report([save(tmp_path / "b.json", plain)], kernels=artifact).markdown
    assert merged == markdown
    artifact.write_text('{"kernels": {}}')
    with pytest.raises(ReportInputError, match="kernels.json: the file has no 'kernel_errors' key"):
        render_report([save(tmp_path / "b.json", plain)], kernels=artifact)


def test_peaks_probed_again_at_the_end_flag_drift(tmp_path):
    start = {"cpu": PEAKS}
    steady = make_run(probes={"start": start, "end": {"cpu": dict(PEAKS, gflops=104.0)}})
    drifted = make_run(probes={"start": start, "end": {"cpu": dict(PEAKS, gflops=60.0)}})
    old = render_report([save(tmp_path / "old.json", make_run())]).markdown
    steady_md = render_report([save(tmp_path / "steady.json", steady)]).markdown
    drifted_md = render_report([save(tmp_path / "drifted.json", drifted)]).markdown
    assert "peaks at the end" not in old
    line = next(line for line in steady_md.splitlines() if "CPU peaks at the end" in line)
    assert "104 GFLOP/s, 10.0 GB/s" in line and "drift" not in line
    line = next(line for line in drifted_md.splitlines() if "CPU peaks at the end" in line)
    assert "60.0 GFLOP/s, 10.0 GB/s **drift" in line


def test_cli_entry_point_reports_errors_without_traceback(tmp_path, capsys):
    from harness.cli import main

    path = save(tmp_path / "a.json", make_run())
    assert main(["report", str(path), "-o", str(tmp_path / "r.md")]) == 0
    assert main(["report", str(path), "-o", str(tmp_path / "r.md")]) == 2
    assert "--overwrite" in capsys.readouterr().out
    assert main(["report", str(path), "-o", str(tmp_path / "r.md"), "--overwrite"]) == 0
    stored = json.loads(path.read_text())
    assert stored["benchmarks"][0]["extra_info"]["metrics"] == {"images_per_s": -1}  # input never modified


def test_gpu_results_use_the_gpu_peaks_never_the_cpu_ones(tmp_path):
    run = make_run()
    run["machine_info"]["sw"]["gpu"] = {"name": "Test GPU", "sm_count": 80,
                                        "peaks": {"gflops": 20_000.0, "gflops_source": "probe", "gbps": 1_000.0,
                                                  "gbps_source": "probe"}}  # fmt: skip
    run["benchmarks"].append(benchmark("cupy_fused", "c1", 1e-4, device="cuda", threads=None))
    frame = results_frame(load_runs([save(tmp_path / "g.json", run)]))
    gpu = frame[frame.device == "cuda"].iloc[0]
    assert gpu.peak_gflops == 20_000.0 and gpu.pct_roofline == pytest.approx(100 * 400_000 / 1e12 / 1e-4)
    assert math.isnan(gpu.speedup)  # no rep_merged on the GPU: no speedup, never the CPU's baseline
    del run["machine_info"]["sw"]["gpu"]["peaks"]
    frame = results_frame(load_runs([save(tmp_path / "h.json", run)]))
    assert pd.isna(frame[frame.device == "cuda"].iloc[0].pct_roofline)


def test_summary_sets_the_fastest_implementation_against_the_fastest_pytorch_way(tmp_path):
    markdown = render_report([save(tmp_path / "a.json", make_run())], notes="profile: conv 40%").markdown
    summary = markdown.split("## Summary")[1].split("## Notes")[0]
    # c1: numba_cpu 4 ms against the fastest PyTorch way, rep_merged 8 ms (torch_roll, 10 ms, is slower)
    row = next(line for line in summary.splitlines() if "| c1 " in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # suite, case, fastest implementation, median ms, % roofline, fastest PyTorch way, its median ms,
    # its % roofline (useful), its % roofline (executed), speedup, roofline limit
    assert cells[1:4] == ["c1", "numba_cpu", "4.00"]
    assert cells[5:7] == ["rep_merged", "8.00"] and cells[9] == "2.00"
    # roofline time of c1's useful work with PEAKS: max(2 MFLOP / 100 GFLOP/s, 0.4 MB / 10 GB/s) = 40 us
    assert cells[4] == "1.00" and cells[11] == "200"  # 40 us / 4 ms; 8 ms / 40 us
    assert cells[10] == "—"  # no interleaved comparison in this run: no paired speedup
    # rep_merged executes 3 MFLOP: 30 us of compute, still memory-bound at 40 us
    assert cells[7] == cells[8] == "0.500"
    assert markdown.split("## Notes")[1].split("## Results")[0].strip() == "profile: conv 40%"


def test_the_fastest_pytorch_way_is_chosen_by_role_not_by_name(tmp_path):
    medians = dict(MEDIANS) | {("my_torch_way", "c1"): 0.003, ("numba_cpu", "c1"): 0.004}
    ROLES["my_torch_way"] = Role.PYTORCH_WAY
    try:
        markdown = render_report([save(tmp_path / "a.json", make_run(medians=medians))]).markdown
    finally:
        del ROLES["my_torch_way"]
    row = next(line for line in markdown.split("## Summary")[1].splitlines() if "| c1 " in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "numba_cpu" and cells[5] == "my_torch_way" and cells[9] == "0.750"  # slower than it


def test_a_lower_precision_row_is_labelled_and_never_the_fastest_pytorch_way(tmp_path):
    medians = dict(MEDIANS) | {("rep_merged_cl_bf16", "c1"): 0.001}  # faster than everything, in bfloat16
    ROLES["rep_merged_cl_bf16"] = Role.LOWER_PRECISION
    try:
        markdown = render_report([save(tmp_path / "a.json", make_run(medians=medians))]).markdown
    finally:
        del ROLES["rep_merged_cl_bf16"]
    row = next(line for line in markdown.split("## Summary")[1].splitlines() if "| c1 " in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "numba_cpu" and cells[5] == "rep_merged"  # the FP32 PyTorch way, not the bfloat16 row
    results = markdown.split("## Results")[1]
    (line,) = [line for line in results.splitlines() if "rep_merged_cl_bf16" in line]
    assert "lower_precision" in line and "lower_precision (the same branches in FP16 / BF16" in results


def test_two_runs_of_one_machine_with_different_peaks_are_two_runs(tmp_path):
    loaded = PEAKS | {"gflops": 40.0}  # a probe made under load
    paths = [save(tmp_path / "idle.json", make_run()), save(tmp_path / "busy.json", make_run(peaks=loaded))]
    frame = results_frame(load_runs(paths))
    assert sorted(frame.machine.unique()) == ["box-a [busy]", "box-a [idle]"]
    by_run = frame.groupby("machine")["peak_gflops"].unique()
    assert list(by_run["box-a [busy]"]) == [40.0] and list(by_run["box-a [idle]"]) == [100.0]
    report = render_report(paths)
    machines = report.markdown.split("## Machines")[1].split("## Summary")[0]
    assert "box-a [busy]" in machines and "box-a [idle]" in machines and "40.0 (given" in machines
    assert set(report.figures) == {"roofline-box-a_busy-cpu.png", "roofline-box-a_idle-cpu.png"}
    same = save(tmp_path / "again.json", make_run(peaks=PEAKS | {"gflops": 105.0}))  # within 10%: the same state
    with pytest.raises(ReportInputError, match="also measured in"):
        results_frame(load_runs([paths[0], same]))


def test_no_figure_above_the_roofline_is_shown_without_a_flag(tmp_path):
    medians = dict(MEDIANS) | {("numba_cpu", "c1"): 0.00002}  # 20 us: faster than the 40 us roofline
    markdown = render_report([save(tmp_path / "a.json", make_run(medians=medians))]).markdown
    row = next(line for line in markdown.split("## Results")[1].splitlines() if line.startswith("| c1 ") and "numba_cpu" in line)
    assert "200 † (memory)" in row
    assert "†: above 100% of the roofline" in markdown.split("## Results")[1]
    summary = markdown.split("## Summary")[1].split("## Results")[0]
    assert not any("| c1 " in line for line in summary.splitlines())  # its only implementation: not crowned
    assert "- c1 (box-a, cpu): **numba_cpu** at 0.0200 ms is 200% of the roofline" in summary


def test_a_baseline_with_different_probes_is_not_called_a_regression(tmp_path):
    base = save(tmp_path / "base.json", make_run())
    slower = {key: 1.5 * median for key, median in MEDIANS.items()}
    new = save(tmp_path / "new.json", make_run(medians=slower, peaks=PEAKS | {"gflops": 50.0}))
    verdicts = compare(results_frame(load_runs([new])), results_frame(load_runs([base])), 1.0,
                       load_runs([new]), load_runs([base]))  # fmt: skip
    assert set(verdicts.verdict) == {"probes differ"}
    section = render_report([new], baseline=[base]).markdown.split("## Comparison with the baseline")[1]
    assert "regression: 0" in section and "probes differ: 6" in section
    assert "not comparable on 6 results" in section


def test_files_of_the_first_schema_are_refused_and_the_upgrade_gives_the_roles_they_had(tmp_path):
    import runpy

    legacy = make_run()
    roles = {}
    for bench in legacy["benchmarks"]:
        extra = bench["extra_info"]
        roles[extra["computation"]] = extra.pop("role")
        for key in ("schema", "kind", "baseline", "setup_seconds"):
            del extra[key]
        extra["kind"] = "peer" if extra["computation"].startswith("rep_") else "implementation"
    path = save(tmp_path / "old.json", legacy)
    with pytest.raises(ReportInputError, match="no 'schema' key .*upgrade_schema1.py"):
        load_runs([path])
    upgrade = runpy.run_path(str(Path(__file__).parents[1] / "reports" / "notes" / "upgrade_schema1.py"))
    upgrade["main"]([str(path)])
    frame = results_frame(load_runs([path]))
    assert dict(zip(frame.computation, frame.role)) == roles == {
        "numba_cpu": "implementation", "torch_roll": "pytorch_way", "rep_merged": "pytorch_way"}  # fmt: skip
    assert frame[frame.computation == "rep_merged"].baseline.all() and not frame[frame.computation != "rep_merged"].baseline.any()


def network_benchmark(network: str, impl: str | None, median: float, **values) -> dict:
    """One stored network benchmark, its row written by the schema's owner (harness.results.NetworkRow)."""
    fields = dict(computation=f"{network}[{impl}]" if impl else network, network=network, implementation=impl,
                  label=network, device="cpu", case=f"{network}-b1", suite="models", batch=1, height=224, width=224,
                  small_kernel=None, flops=9_800_000_000, compulsory_bytes=10**8, params=31_000_000, sw_time_share=0.4,
                  threads=2, dtype="float32", memory_format="contiguous", verified="float64: checked") | values  # fmt: skip
    stats = {"min": median, "max": median, "mean": median, "stddev": 0.0, "rounds": 3, "median": median,
             "iqr": 0.0, "q1": median, "q3": median, "ops": 1 / median, "iterations": 1}  # fmt: skip
    return {"name": fields["computation"], "stats": stats, "extra_info": NetworkRow(**fields).to_extra_info()}


def test_network_rows_are_validated_and_go_to_their_own_section(tmp_path):
    run = make_run()
    run["benchmarks"] += [network_benchmark("sw_tiny", "numba_cpu", 0.5), network_benchmark("unireplknet_tiny", None, 0.25)]
    path = save(tmp_path / "m.json", run)
    frame = results_frame(load_runs([path]))
    assert len(frame) == 6 and "sw_tiny[numba_cpu]" not in set(frame.computation)
    table7 = render_report([path]).markdown.split("## Table 7 on this machine")[1].split("## Results")[0]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table7.splitlines())}
    assert rows["SW-tiny"][1:5] == ["numba_cpu", "2", "378", "9.8"]  # 1 image / 0.5 s; GFLOP/image from the count
    assert rows["SW-tiny / UniRepLKNet-T"][1] == "0.5 (SW: numba_cpu)"  # 2 images/s over 4 images/s
    broken = make_run()
    broken["benchmarks"].append(network_benchmark("sw_tiny", "numba_cpu", 0.5))
    del broken["benchmarks"][-1]["extra_info"]["params"]
    with pytest.raises(ReportInputError, match="benchmark 'sw_tiny\\[numba_cpu\\]': extra_info has no 'params' key"):
        load_runs([save(tmp_path / "broken.json", broken)])


def test_untyped_model_rows_of_older_files_are_read_as_network_rows(tmp_path):
    typed = make_run(benchmarks=[network_benchmark("sw_tiny", "numba_cpu", 0.5)])
    old = json.loads(json.dumps(typed))
    extra = old["benchmarks"][0]["extra_info"]
    del extra["schema"]
    extra.update(kind="model", gflop_per_image=-1.0, images_per_s=-1.0)  # derived values, stored then: not used
    (tmp_path / "typed").mkdir(), (tmp_path / "old").mkdir()
    first, second = save(tmp_path / "typed" / "run.json", typed), save(tmp_path / "old" / "run.json", old)
    assert load_runs([second])[0].network_rows() == load_runs([first])[0].network_rows()
    assert render_report([first]).markdown == render_report([second]).markdown


def test_a_suite_is_introduced_by_its_description(tmp_path):
    run = make_run(suite_descriptions={"sw_small": "SW-small's stage layers (a test description)"})
    results = render_report([save(tmp_path / "a.json", run)]).markdown.split("## Results")[1]
    assert "### Suite `sw_small`\n\nSW-small's stage layers (a test description)\n" in results
    from harness.cases import suite_descriptions

    descriptions = suite_descriptions()
    assert descriptions["edge"].startswith("Shapes that break")
    assert set(descriptions) == {path.stem for path in (Path(__file__).parents[1] / "cases").glob("*.toml")}  # every committed suite has one


def test_a_sweep_per_stage_gets_a_panel_per_stage_and_borrows_the_stage_s_own_case(tmp_path):
    stages = {"s1": dict(big_kernel=51, channels=60, height=56, width=56), "s4": dict(big_kernel=13, channels=492, height=7, width=7)}
    benchmarks = [
        benchmark("numba_cpu", f"{stage}-sp{sp}", 0.01 * (1 - sp / 2), suite="sweep_sparsity", sparsity=sp, **layer)
        for stage, layer in stages.items() for sp in (0.3, 0.6)
    ] + [benchmark("numba_cpu", f"{stage}-b4", 0.01, suite="sw_tiny", sparsity=0.0, **layer) for stage, layer in stages.items()]
    benchmarks.append(benchmark("numba_cpu", "other-layer", 0.01, suite="sw_tiny", sparsity=0.0, big_kernel=49, channels=122))
    report = render_report([save(tmp_path / "s.json", make_run(benchmarks=benchmarks))])
    figure = report.figures["sweep-sweep_sparsity.png"]
    assert len(figure.axes) == 2  # a panel per stage
    for axes in figure.axes:
        (line,) = axes.get_lines()
        assert list(line.get_xdata()) == [0.0, 0.3, 0.6]  # sparsity 0 from sw_tiny, the same layer only
    assert "(with the same layers' sparsity = 0.0 from sw_tiny)" in report.markdown


def test_an_implementation_faster_than_the_roofline_is_flagged_impossible_not_crowned(tmp_path):
    # c1's useful work takes 40 us at PEAKS (test_summary_...): 20 us is 200% of the roofline
    medians = dict(MEDIANS) | {("cheat_fast", "c1"): 20e-6}
    ROLES["cheat_fast"] = Role.IMPLEMENTATION
    try:
        markdown = render_report([save(tmp_path / "a.json", make_run(medians=medians))]).markdown
    finally:
        del ROLES["cheat_fast"]
    summary = markdown.split("## Summary")[1].split("## Results")[0]
    row = next(line for line in summary.splitlines() if "| c1 " in line)
    assert [cell.strip() for cell in row.strip("|").split("|")][2] == "numba_cpu"  # the fastest possible one
    (flag,) = [line for line in summary.splitlines() if "cheat_fast" in line]
    assert flag.startswith("- c1 ") and "0.0200 ms is 200% of the roofline" in flag and "not crowned" in flag
