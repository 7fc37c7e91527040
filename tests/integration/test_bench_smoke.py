"""Every benchmark still runs: ``python -m bench.run --smoke`` runs each one as a process at tiny sizes against the
local stack and writes its report; the figures' values mean nothing at those sizes, their presence does.

A benchmark that only runs in ``make bench`` rots unnoticed (the console's once waited for /readyz on the page port
after the probes had moved to the ops port; two wrote with a role least privilege no longer allowed). The report is
written to a temporary folder (WA_BENCH_RESULTS), never over bench/results/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import SMOKE, summary_rows
from devtools.samples import REPO_ROOT

pytestmark = pytest.mark.integration

# Benchmarks run on their own, not by bench/run.py: tiny arguments of their own.
ON_THEIR_OWN: dict[str, list[str]] = {"producer": ["--records", "50", "--large", "2", "--save"]}
# One line of the report's targets per figure that has a target: its figure is in the report, by its name.
TARGET_ROWS = [
    "ingest requests/s",
    "ingest p99 latency",
    "archiver events/s (until committed)",
    "archiver peak RSS",
    "whole machine CPU per archived event",
    "PostgreSQL CPU per archived event",
    "webhook → durable p99",
    "erasure: key destroyed",
    "machine CPU per expired / per archived event",
    "10,000-message conversation, format v2 (median)",
    "index CPU, binary keys / text keys",
    "keyword search p95, one word, Actions.search",
    "keyword search p95, one word, console POST /search",
    "keyword search p95, most frequent words, one word, reader_case, Actions.search",
    "timeline first page",
    "documents archived byte-exact",
    "PDF transcript peak RSS per volume process",
    "wa-archive verify, 1,000,000 records",
    "archiver CPU per event, hash chain overhead",
    "relay lag p99",
]


def benchmarks() -> set[str]:
    """The modules of bench/ that write a result: every benchmark, found by what it does, not by a list."""
    return {
        path.stem
        for path in (REPO_ROOT / "bench").glob("*.py")
        if re.search(r"^\s*write_result\(", path.read_text(), re.MULTILINE)
    }


def run_bench(args: list[str], results: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "WA_BENCH_RESULTS": str(results)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_every_benchmark_is_in_the_smoke_run() -> None:
    assert benchmarks() == set(SMOKE) | set(ON_THEIR_OWN)


@pytest.mark.timeout(900)
def test_every_benchmark_runs_at_tiny_sizes_and_the_report_holds_its_figures(tmp_path: Path) -> None:
    done = run_bench(["bench.run", "--smoke"], tmp_path, 840)
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    results: dict[str, dict[str, Any]] = report["results"]
    failed = {name: result for name, result in results.items() if result["status"] != "ok"}
    assert failed == {}, done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0
    assert report["mode"] == "smoke"
    assert set(results) == set(SMOKE)
    for name, result in results.items():
        assert result["benchmark"] == name
        assert result["figures"], f"{name} reported no figures"
    labels = [label for label, *_ in summary_rows(results)]
    missing = [row for row in TARGET_ROWS if not any(label.startswith(row) for label in labels)]
    assert missing == [], labels
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"### {name} (ok," in markdown for name in SMOKE)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(ON_THEIR_OWN))
def test_a_benchmark_outside_the_report_runs_at_tiny_sizes(name: str, tmp_path: Path) -> None:
    done = run_bench([f"bench.{name}", *ON_THEIR_OWN[name]], tmp_path, 240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads((tmp_path / f"{name}.json").read_text())
    assert document["benchmark"] == name
    assert document["figures"]
