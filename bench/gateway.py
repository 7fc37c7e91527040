"""What the send gateway adds to a send: latency against a direct call to the same Graph API stand-in, and CPU per
send against a bare ASGI app's CPU per request, in one run.

Processes: the Graph API stand-in (devtools/graph_api.py), the gateway (services.gateway: each send journaled to a
topic of its own on the local Kafka with acks=all, forwarded, its outcome journaled) and the bare app
(bench/bare_asgi.py). The load is wrk's (``--connections`` keep-alive connections, closed loop, ``--seconds``): the
rate the machine reaches (the issue asks for 500 sends/s; a python load generator could not produce it on two shared
cores), the same send body each time:

1. directly to the stand-in — the baseline latency of a send;
2. through the gateway — the same sends; the latency it adds is the difference of the percentiles;
3. to the bare app — the same POSTs, for its CPU per request.

The gateway's CPU per send is its process's CPU over phase 2 divided by the sends; the ratio to the bare app's per
request is the issue's figure. The rate actually achieved is reported: on a small machine the load generator,
the stand-in and Kafka share the cores with the gateway.

    python -m bench.gateway [--connections 8] [--seconds 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    CpuMeter,
    demo_env,
    ensure_stack,
    ensure_tool,
    listening,
    start_module,
    wait_http,
    write_result,
)
from bench.ingest import run_wrk
from devtools.broker import create_topic
from devtools.samples import REPO_ROOT
from devtools.serving import free_port

PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"


def send_body(n: int) -> bytes:
    return orjson.dumps(
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": f"3361{n % 100000:07d}",
            "type": "text",
            "text": {"preview_url": False, "body": f"Votre commande {n} est en route. Merci de votre confiance !"},
        }
    )


LUA = """
local body = '%(body)s'
request = function()
  return wrk.format("POST", "%(path)s",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(token)s"}, body)
end
"""


def wrk_phase(wrk: str, url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    """wrk's closed loop of ``connections`` keep-alive connections: the rate the machine reaches and its latency."""
    return run_wrk(wrk, url, script, seconds, connections)


def run_once(
    connections: int, seconds: int, env: dict[str, str], work: Path, topic: str, warm_up: int
) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    wrk = ensure_tool("wrk", "wrk")
    graph_port, gateway_port, ops_port, bare_port = free_port(), free_port(), free_port(), free_port()
    processes = {
        "graph_api": start_module_args(
            # The token as one argument: a random one may begin with "-", which argparse would take for an option.
            ["devtools.graph_api", "--port", str(graph_port), f"--token={token}"],
            env,
            work / "graph.log",
        ),
        "gateway": start_module(
            "services.gateway",
            {
                **env,
                "WA_GATEWAY_PORT": str(gateway_port),
                "WA_GATEWAY_OPS_PORT": str(ops_port),
                "WA_GATEWAY_LOG_LEVEL": "WARNING",
                "WA_GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{graph_port}",
                "WA_GATEWAY_KAFKA__EVENTS_TOPIC": topic,
            },
            work / "gateway.log",
        ),
        "bare_asgi": start_module("bench.bare_asgi", {**env, "WA_INGEST_PORT": str(bare_port)}, work / "bare.log"),
    }
    try:
        deadline = time.monotonic() + 60
        while not listening(graph_port):  # the stand-in has no probe: it answers once it listens
            if time.monotonic() > deadline:
                raise RuntimeError("the Graph API stand-in did not start")
            time.sleep(0.1)
        wait_http(f"http://127.0.0.1:{ops_port}/readyz")
        wait_http(f"http://127.0.0.1:{bare_port}/")
        path = f"/v21.0/{PHONE_NUMBER_ID}/messages"
        script = work / "send.lua"
        script.write_text(LUA % {"body": send_body(1).decode(), "path": path, "token": token})
        figures: dict[str, Any] = {}
        for name, base in (
            ("direct", f"http://127.0.0.1:{graph_port}"),
            ("gateway", f"http://127.0.0.1:{gateway_port}"),
            ("bare_asgi", f"http://127.0.0.1:{bare_port}"),
        ):
            if warm_up:
                wrk_phase(wrk, base + path, script, warm_up, connections)  # warm-up: connections, caches
            meter = CpuMeter({label: process.pid for label, process in processes.items()}, waited_children="wrk")
            figures[name] = dict(wrk_phase(wrk, base + path, script, seconds, connections))
            meter.stop()
            requests = max(round(figures[name]["requests_per_s"] * seconds), 1)
            figures[name]["cpu"] = meter.per_unit(requests, load_generator="wrk")["cpu_us_per_unit"]
        direct, through = figures["direct"], figures["gateway"]
        gateway_cpu = through["cpu"]["gateway"]
        bare_cpu = figures["bare_asgi"]["cpu"]["bare_asgi"]
        return {
            **figures,
            "added_p50_ms": round(through["p50_ms"] - direct["p50_ms"], 3),
            "added_p99_ms": round(through["p99_ms"] - direct["p99_ms"], 3),
            "gateway_cpu_us_per_send": gateway_cpu,
            "bare_asgi_cpu_us_per_request": bare_cpu,
            "cpu_ratio_to_bare": round(gateway_cpu / bare_cpu, 2) if bare_cpu else None,
        }
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=30)


def start_module_args(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """start_module with arguments (the stand-in takes its port and token on the command line)."""
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm-up", type=int, default=2, help="seconds of load before each measured phase")
    args = parser.parse_args()
    ensure_stack()
    env = demo_env()
    work = Path(tempfile.mkdtemp(prefix="wa-bench-gateway-"))
    topic = asyncio.run(create_topic(f"127.0.0.1:{env['WA_KAFKA_PORT']}", partitions=3, prefix="bench-gateway"))
    runs = [run_once(args.connections, args.seconds, env, work, topic, args.warm_up) for _ in range(args.runs)]

    def spread(key: str) -> list[float]:
        values = [run[key] for run in runs if run[key] is not None]
        return [min(values), max(values)] if values else []

    write_result(
        "gateway",
        {
            "connections": args.connections,
            "seconds": args.seconds,
            "runs": runs,
            "ranges": {
                key: spread(key)
                for key in ("added_p50_ms", "added_p99_ms", "gateway_cpu_us_per_send", "cpu_ratio_to_bare")
            },
            "targets": {"added_p99_ms": 5, "moonshot_added_p99_ms": 2, "cpu_ratio_to_bare": 3.0},
        },
    )


if __name__ == "__main__":
    main()
