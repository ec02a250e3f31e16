"""bench/ must not rot: every entry point imports, and a quick sync run goes through.

Correctness only: the run must complete every request it sends and write its report; no
figure is asserted (performance is measured in bench/, never in timed tests).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = (
    "bench.fairness",
    "bench.profile",
    "bench.run",
    "bench.soak",
    "bench.stack",
    "bench.store_ops",
    "bench.streams",
    "bench.upstream",
)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_bench_module_imports(module: str) -> None:
    importlib.import_module(module)


def run_bench(module: str, *args: str, results: Path, report: str) -> Any:
    """Run a bench entry point to its end; its one JSON report (named like ``report``), which
    must list no problem."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--results", str(results)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report_file,) = results.glob(report)
    found = json.loads(report_file.read_text())
    assert found["problems"] == []
    return found


@pytest.mark.timeout(300)
def test_a_quick_sync_run_completes(tmp_path: Path) -> None:
    report = run_bench(
        "bench.run",
        *("--quick", "--only", "sync", "--log-level", "WARNING"),
        results=tmp_path,
        report="run-*.json",
    )
    rows = {(r["scenario"], r["metric"]): r for r in report["rows"]}
    assert ("sync", "req/s at c=32") in rows and ("sync", "latency p50 ms") in rows
    for row in rows.values():
        assert row["resq"] is not None and row["resq"] >= 0, row


@pytest.mark.timeout(300)
def test_a_small_soak_runs_and_loses_nothing(tmp_path: Path) -> None:
    # A worker of two killed every 2 s while 12 jobs go in: the soak's own checks (nothing
    # lost, logs gap-free, kills left no survivor) must all pass.
    report = run_bench(
        "bench.soak",
        *("--jobs", "12", "--rate", "3", "--workers", "2", "--kill-every", "2"),
        *("--sample", "3", "--probe", "1", "--probe-seconds", "2"),
        results=tmp_path,
        report="soak-*.json",
    )
    numbers = report["numbers"]
    assert numbers["lost"] == 0 and numbers["kills"] >= 1 and numbers["accepted"] == 12


@pytest.mark.timeout(120)
def test_a_tiny_fairness_run_completes(tmp_path: Path) -> None:
    # Fair queues on only, A 40 jobs then B 3, 10 creates per tenant for the overhead: every
    # job completes, B's waits come from the admin API and every row is filled in.
    report = run_bench(
        "bench.fairness",
        *("--quick", "--fair", "on", "--jobs", "40", "--b-jobs", "3", "--creates", "10"),
        *("--log-level", "WARNING"),
        results=tmp_path,
        report="fairness-*.json",
    )
    rows = {(r["scenario"], r["fair"]): r for r in report["rows"]}
    assert set(rows) == {("alone", "on"), ("with_b", "on")}
    assert rows["with_b", "on"]["A jobs"] == 40 and rows["with_b", "on"]["B wait max s"] >= 0
    overhead = report["phases"]["on"]["overhead"]
    assert overhead["p50_added_ms"] is not None
    assert overhead["limiter_admit_us"]["bench-micro-limited"]["p50"] > 0
