"""Ingest throughput and latency: signed single-message webhooks against one ingest process (real Kafka,
acks=all), and the same load against a bare ASGI app that only answers 200. The ratio is the figure.

The load generator is wrk (Debian package), a separate process on 127.0.0.1, cycling through pre-signed
realistic bodies with unique wamids. Targets (issue #3): >= 5,000 requests/s, p99 <= 25 ms, ratio >= 0.5.

    python -m bench.ingest [--seconds 15] [--connections 32]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.common import CpuMeter, demo_env, ensure_stack, ensure_tool, start_module, wait_http, write_result
from devtools.serving import free_port
from services.ingest.signature import sign
from services.tools.replay import meta_encode

LUA = """
local bodies = {}
local signatures = {}
for line in io.lines("%(bodies)s") do
  local tab = line:find("\\t")
  signatures[#signatures + 1] = line:sub(1, tab - 1)
  bodies[#bodies + 1] = line:sub(tab + 1)
end
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/webhooks/whatsapp",
    {["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = signatures[i]}, bodies[i])
end
"""


def realistic_body(n: int) -> bytes:
    wa_id = f"1650555{n % 5000:04d}"
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": f"wamid.BENCH{uuid.uuid4().hex}",
                                    "timestamp": str(1_760_000_000 + n),
                                    "type": "text",
                                    "text": {"body": "Hello, I'd like to know the status of my order #4711 — thanks!"},
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    return meta_encode(orjson.dumps(body))


def run_wrk(wrk: str, url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    """wrk's requests/s, p50 and p99 (two threads, or one for one connection: wrk needs a connection per thread)."""
    output = subprocess.run(
        [wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if not match:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{output}")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if not rps:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{output}")
    return {
        "requests_per_s": float(rps.group(1)),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--bodies", type=int, default=5000)
    args = parser.parse_args()

    ensure_stack()
    wrk = ensure_tool("wrk", "wrk")
    env = demo_env()
    secret = orjson.loads(env["WA_INGEST_APP_SECRETS"])[0].encode()
    work = Path(tempfile.mkdtemp(prefix="wa-bench-ingest-"))
    bodies = work / "bodies.tsv"
    with bodies.open("wb") as out:
        for n in range(args.bodies):
            body = realistic_body(n)
            out.write(sign(body, secret).encode() + b"\t" + body + b"\n")
    script = work / "post.lua"
    script.write_text(LUA % {"bodies": bodies})

    figures: dict[str, Any] = {
        "connections": args.connections,
        "seconds": args.seconds,
        "body_bytes": len(realistic_body(0)),
    }
    for name, module in (("ingest", "services.ingest"), ("bare_asgi", "bench.bare_asgi")):
        port = free_port()
        process = start_module(
            module,
            {
                **env,
                "WA_INGEST_PORT": str(port),
                "WA_INGEST_LOG_LEVEL": "WARNING",
                "WA_INGEST_KAFKA__EVENTS_TOPIC": "wa.events.v1",
            },
            work / f"{name}.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz")
            url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
            run_wrk(wrk, url, script, 3, args.connections)  # warm-up: JIT of nothing, but connections and batching
            time.sleep(1)
            meter = CpuMeter({name: process.pid}, waited_children="load_generator")
            figures[name] = run_wrk(wrk, url, script, args.seconds, args.connections)
            meter.stop()
            requests = round(figures[name]["requests_per_s"] * args.seconds)
            figures[name]["cpu"] = meter.per_unit(requests, load_generator="load_generator")
        finally:
            process.terminate()
            process.wait(timeout=30)
    figures["ratio"] = round(figures["ingest"]["requests_per_s"] / figures["bare_asgi"]["requests_per_s"], 3)
    # The issue #16 figure: CPU per request of ingest over the bare app's, both measured in this run.
    ingest_cpu = figures["ingest"]["cpu"]["cpu_us_per_unit"]["ingest"]
    bare_cpu = figures["bare_asgi"]["cpu"]["cpu_us_per_unit"]["bare_asgi"]
    figures["cpu_ratio_to_bare"] = round(ingest_cpu / bare_cpu, 2) if bare_cpu else None
    figures["targets"] = {"requests_per_s": 5000, "p99_ms": 25, "ratio": 0.5, "cpu_ratio_to_bare": 3.0}
    write_result("ingest", figures)


if __name__ == "__main__":
    main()
