"""Shared pieces of the benchmarks: the demo configuration, processes, machine facts, result files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools.devrun import apply_migrations
from devtools.samples import REPO_ROOT, as_kafka_super_user, load_demo_env
from services.core.published import LOCAL_DEMO_FLAG

# WA_BENCH_RESULTS: elsewhere (the smoke run of tests/integration/test_bench_smoke.py writes to a temporary folder).
RESULTS = Path(os.environ.get("WA_BENCH_RESULTS") or REPO_ROOT / "bench" / "results")
STACK_PORTS = ("WA_KAFKA_PORT", "WA_S3_PORT", "WA_PG_PORT", "WA_PROMETHEUS_PORT")


def demo_env() -> dict[str, str]:
    """The demo configuration, overridden by the WA_ variables of the environment; a local demo, so the services
    accept its published secrets (services/core/published.py). The services connect to Kafka as its super user:
    the benchmarks give them topics and groups of their own (devtools.samples.as_kafka_super_user)."""
    env = as_kafka_super_user(load_demo_env())
    return {**env, **{k: v for k, v in os.environ.items() if k.startswith("WA_")}, LOCAL_DEMO_FLAG: "1"}


def ensure_stack() -> None:
    """The local stack up and the schema migrated by its owner (the services' roles may not migrate). A stack
    already listening on the demo's ports is used as it is (``make test`` started it, maybe from another
    checkout), not started a second time."""
    env = demo_env()
    if not all(listening(int(env[port])) for port in STACK_PORTS):
        subprocess.run(
            [str(REPO_ROOT / "deploy" / "local" / "stack.sh"), "up"], check=True, capture_output=True, timeout=600
        )
    apply_migrations({**os.environ, **env})


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def ensure_tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit(f"{name} is missing: apt-get install {package}")
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, capture_output=True, timeout=600)
    found = shutil.which(name)
    if not found:
        sys.exit(f"{name} still missing after installing {package}")
    return found


def wait_http(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s}s")


def start_module(module: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def rss_mb(pid: int) -> float:
    """Resident set size now (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# The local stack's servers by process name (/proc/PID/comm): how a benchmark tells where the machine's time went.
STACK_PROCESSES = {"java": "kafka", "weed": "s3", "postgres": "postgres", "prometheus": "prometheus"}


def _process_cpu() -> dict[int, tuple[str, float]]:
    """Every live process: its name and the CPU seconds (user + system) it has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        found[int(stat.parent.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return found


def _machine_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) clock ticks of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    total = sum(values[:8])
    return total - idle, total, steal


class CpuMeter:
    """Where the CPU went during a measured window: named processes of the benchmark (by pid), the stack's servers
    (by process name, every process of each: PostgreSQL's backends, …) and the whole machine. A child of this
    process that runs and is reaped inside the window (the load generator run by ``subprocess.run``) is gone from
    /proc when the window closes: ``waited_children`` names the label its CPU goes to.

    ``per_unit(n)`` gives microseconds of CPU per unit of work (event, request, object) for each, and what the
    whole machine spent per unit: ``cores / that`` is the ceiling of the rate on this machine whatever the code does
    faster elsewhere. A process that ends inside the window loses its share (the stack's servers keep running).
    """

    def __init__(self, pids: dict[str, int], *, waited_children: str | None = None) -> None:
        self.pids = pids
        self.waited_children = waited_children
        self._children_start = self._children_seconds()
        self._start = _process_cpu()
        self._machine_start = _machine_ticks()
        self._spent: dict[str, float] = {}
        self._machine: dict[str, float] = {}

    @staticmethod
    def _children_seconds() -> float:
        times = os.times()
        return times.children_user + times.children_system

    def stop(self) -> None:
        """Close the window (call before the benchmark's own processes exit)."""
        end = _process_cpu()
        busy0, total0, steal0 = self._machine_start
        busy1, total1, steal1 = _machine_ticks()
        named = {pid: label for label, pid in self.pids.items()}
        spent: dict[str, float] = dict.fromkeys([*self.pids, *STACK_PROCESSES.values()], 0.0)
        for pid, (name, seconds) in end.items():
            label = named.get(pid) or STACK_PROCESSES.get(name)
            if label is None:
                continue
            before = self._start.get(pid)
            spent[label] += seconds - (before[1] if before and before[0] == name else 0.0)
        if self.waited_children is not None:
            spent[self.waited_children] = spent.get(self.waited_children, 0.0) + (
                self._children_seconds() - self._children_start
            )
        ticks = max(total1 - total0, 1)
        self._spent = spent
        self._machine = {
            "busy_cpu_seconds": (busy1 - busy0) / os.sysconf("SC_CLK_TCK"),
            "busy_fraction": (busy1 - busy0) / ticks,
            "steal_fraction": (steal1 - steal0) / ticks,
        }

    def per_unit(self, units: int, *, load_generator: str | None = None) -> dict[str, Any]:
        """CPU µs per unit for each process group and the machine, the machine's busy share, and the rate ceiling
        (without the ``load_generator`` label's share: it would not run beside the service in production)."""
        if not self._machine:
            self.stop()
        cores = os.cpu_count() or 1
        busy = self._machine["busy_cpu_seconds"]
        per_unit = {label: round(seconds / units * 1e6, 1) for label, seconds in self._spent.items()}
        per_unit["everything_else"] = round(max(busy - sum(self._spent.values()), 0.0) / units * 1e6, 1)
        machine_us = busy / units * 1e6
        served_us = machine_us - (per_unit.get(load_generator, 0.0) if load_generator else 0.0)
        return {
            "cpu_us_per_unit": per_unit,
            "machine_cpu_us_per_unit": round(machine_us, 1),
            "machine_busy_fraction": round(self._machine["busy_fraction"], 2),
            "machine_steal_fraction": round(self._machine["steal_fraction"], 3),
            # Every core busy at this cost per unit: the most this machine could do with the same code and servers.
            "machine_ceiling_per_s": round(cores * 1e6 / served_us) if served_us > 0 else None,
        }


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m": round(load[0], 2),
    }


def write_result(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "at": datetime.now(UTC).isoformat(), "machine": machine(), "figures": figures}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(document, indent=2))
    return path
