"""Upgrade a benchmark JSON written before rows declared their role (no ``schema`` key) to
schema 3, in place: each layer row gets the role and baseline the report gave it when the file
was written (the report then hard-coded them by name: the names below), ``setup_seconds`` None,
``tier`` quick and ``useful_flops`` (its ``flops``: only implementations' were stored then).

    .venv/bin/python reports/notes/upgrade_schema1.py reports/runs/OLD.json

The harness reads only rows that declare their role; these names stay here, out of harness/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.files import write_text_atomically
from harness.registry import Role
from harness.results import SCHEMA, BenchmarkRow

#: What the report hard-coded for unversioned files: the PyTorch ways and the speed baseline.
PYTORCH_WAYS = {"rep_merged", "rep_cross", "torch_roll"}
BASELINE = "rep_merged"


def upgraded(info: dict) -> dict:
    name, kind = info.get("computation"), info.get("kind")
    if kind not in ("implementation", "peer"):
        raise ValueError(f"row {name!r}: kind must be 'implementation' or 'peer', got {kind!r}")
    if name in PYTORCH_WAYS:
        role = Role.PYTORCH_WAY
    else:
        role = Role.IMPLEMENTATION if kind == "implementation" else Role.OTHER_OPERATOR
    values = {"role": role.value, "baseline": name == BASELINE, "setup_seconds": None, "tier": "quick",
              **{k: v for k, v in info.items() if k != "kind"}, "useful_flops": info.get("useful_flops", info.get("flops"))}  # fmt: skip
    BenchmarkRow._read(values)  # validated as the report will read it
    return {"schema": SCHEMA, "kind": "layer", **values}  # the file's own keys keep their order


def main(paths: list[str]) -> None:
    for path in map(Path, paths):
        data = json.loads(path.read_text())
        for bench in data["benchmarks"]:
            if "schema" not in bench["extra_info"] and bench["extra_info"].get("kind") != "model":
                bench["extra_info"] = upgraded(bench["extra_info"])
        write_text_atomically(path, json.dumps(data, indent=4) + "\n", overwrite=True)
        print(f"{path}: rows at schema {SCHEMA}")


if __name__ == "__main__":
    main(sys.argv[1:])
