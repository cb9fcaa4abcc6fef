"""Issue 24's last "done when": a local-executor cluster run of a selection of the quick tier gives
the same report as ``make bench`` on the same selection, plus the per-job records.

Runs both, one after the other, into a scratch folder, then compares what must be equal (the
timings are not: they are two runs): the report's section headings in order (the cluster's adds
its "Cluster jobs" section), the set of timed rows (suite, case, computation, device, dtype), the
not-run list, the failures; and prints the cluster's per-job record.

    .venv/bin/python reports/notes/cluster_vs_bench.py [--suite NAME ...] [--keep DIR [--compare-only]]

Default selection: ``--suite sweep_groups`` (a few minutes each on 2 cores); the whole quick
tier works the same and takes about an hour for the pair here.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def headings(markdown: str) -> list[str]:
    return re.findall(r"^#+ .*$", markdown, re.M)


def timed_rows(run: dict) -> set[tuple]:
    return {(b["extra_info"].get("suite"), b["extra_info"].get("case"), b["extra_info"]["computation"],
             b["extra_info"].get("device"), b["extra_info"].get("dtype")) for b in run["benchmarks"]}  # fmt: skip


def not_run(run: dict) -> set[tuple]:
    return {(e["computation"], e["device"], e["reason"]) for e in run["sw"]["not_run"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="append", default=None, help="suite of the selection (repeatable)")
    parser.add_argument("--keep", type=Path, default=None, help="folder to run in and keep (default: a scratch one)")
    parser.add_argument("--compare-only", action="store_true", help="compare what an earlier --keep run left there")
    args = parser.parse_args()
    suites = args.suite or ["sweep_groups"]
    selection = [part for suite in suites for part in ("--suite", suite)]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="cluster_vs_bench."))
    folder.mkdir(parents=True, exist_ok=True)
    bench_json, bench_md = folder / "bench.json", folder / "bench.md"
    cluster_dir = folder / "cluster"
    if not args.compare_only:
        code = run_both(selection, bench_json, bench_md, cluster_dir)
        if code:
            return code
    return compare(folder, bench_json, bench_md, cluster_dir)


def run_both(selection: list[str], bench_json: Path, bench_md: Path, cluster_dir: Path) -> int:
    bench = subprocess.run(["make", "bench", f"BENCH_JSON={bench_json}", f"REPORT={bench_md}",
                            f"BENCH_ARGS=--benchmark-max-time=0.5 --benchmark-min-rounds=3 {' '.join(selection)}"],
                           cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    print(f"make bench: exit {bench.returncode}")
    cluster = subprocess.run([str(BIN / "swbench"), "cluster", "--executor", "local", "--tier", "quick", *selection,
                              "--output", str(cluster_dir)], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    print(f"swbench cluster --executor local: exit {cluster.returncode}")
    if bench.returncode or cluster.returncode:
        print(bench.stdout[-2000:], bench.stderr[-2000:], cluster.stdout[-2000:], cluster.stderr[-2000:], sep="\n")
        return 1
    return 0


def compare(folder: Path, bench_json: Path, bench_md: Path, cluster_dir: Path) -> int:
    record = json.loads((cluster_dir / "cluster.json").read_text())
    (job,) = record["jobs"]
    direct, remote = json.loads(bench_json.read_text()), json.loads((cluster_dir / job["run"]).read_text())
    direct_md, remote_md = bench_md.read_text(), (cluster_dir / record["report"]).read_text()
    checks = {
        "report headings (the cluster's less its Notes, which hold the per-job records)": (
            headings(direct_md), [h for h in headings(remote_md) if h != "## Notes"]),
        "the per-job records in the cluster's report": (True, "Cluster jobs (`swbench cluster`" in remote_md),
        "timed rows (suite, case, computation, device, dtype)": (timed_rows(direct), timed_rows(remote)),
        "not run (computation, device, reason)": (not_run(direct), not_run(remote)),
        "failures": (direct["sw"]["failures"], remote["sw"]["failures"]),
        "tier and suites": ((direct["sw"]["tier"], direct["sw"]["suites"]), (remote["sw"]["tier"], remote["sw"]["suites"])),
    }
    same = True
    for what, (a, b) in checks.items():
        equal = a == b
        same &= equal
        size = len(a) if isinstance(a, (list, set, tuple)) else ""
        print(f"- {what}: {'same' if equal else 'DIFFERENT'} ({size})")
        if not equal:
            print(f"    make bench only: {sorted(set(map(str, a)) - set(map(str, b)))[:10]}")
            print(f"    cluster only:    {sorted(set(map(str, b)) - set(map(str, a)))[:10]}")
    print(f"- the cluster's job record: target {job['target']}, state {job['state']}, exit {job['returncode']}, "
          f"run {job['run']}, log {job.get('log')}; report {record['report']}")
    print(f"files in {folder}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
