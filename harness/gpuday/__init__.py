"""The GPU day: every GPU answer of the harness in one command (``swbench gpu``, ``make gpu``).

Phases (``PHASES``, in order): env, correctness, sanitizers, timing, peers, counters,
networks, report. Each runs in its own Python process under its own time budget (a crash, a
hang or a timeout in one never stops the next) and its status, wall time and log are recorded.
Everything goes under one folder, in at most eight files (what a lent GPU machine's ``$OUT``
brings back): ``gpu-day.json`` (every phase's status and results), ``gpu-day.log`` (every
phase's output), ``runs/{timing,peers,networks}.json`` (pytest-benchmark JSON that
``swbench report`` reads), ``report.md`` (or ``gpu-day.md`` when the report's libraries are
missing there) and ``report-files.tar.gz`` (its plots).

What a phase covers is chosen from the registry by declared properties, never by name: every
implementation that declares the ``cuda`` device is checked, sanitized, timed, counted and run
in the networks, so a new GPU implementation joins without an edit here.

``--dry-run`` runs every phase on the CPU (host builds and Numba's simulator stand in for the
GPU, tiny shapes; the compute-sanitizer and ncu command lines are printed and their kernel
driver run without them), so CI proves the day runs before a GPU is lent.
"""

from harness.gpuday.day import PHASES, Phase, run_day

__all__ = ["PHASES", "Phase", "run_day"]
