"""``make bench``: every benchmark in one go, then one report (JSON + markdown) in bench/results/.

Runs ingest, archiver, end-to-end freshness, retention, retrieval, the index layouts, the KEK rewrap, the review
console (on an archive of 1,000,000 messages it builds once and reuses: see bench/console.py), keyword search on a
1,000,000-message index in a database of its own (bench/search.py, also built once and reused) and a burst of large
media (bench/media.py: the archiver's peak RSS with eight 100 MB documents in one POST) and `wa-archive recover`
after a database loss (bench/recovery.py), the relay (bench/relay.py), each as its own process
(one failing does not stop the others; the report says which failed), then writes bench/results/report.json and
report.md with every figure against its target, the machine and the versions of the servers and libraries.

    python -m bench.run [--quick | --smoke] [--soak] [--only ingest,archiver,...]

``--quick`` uses smaller sizes (not the targets' conditions); ``--smoke`` tiny ones, to prove that every benchmark
still runs and reports its figures (the test suite does); ``--soak`` adds the 30-minute soak at 1,000 events/s
with RSS over time per service. WA_BENCH_RESULTS writes the results elsewhere than bench/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from bench.common import RESULTS, ensure_stack, machine
from devtools.samples import REPO_ROOT

FULL: dict[str, list[str]] = {
    "ingest": [],
    "archiver": [],
    "freshness": ["--rate", "1000", "--seconds", "60"],
    "retention": [],
    "retrieval": [],
    "index_schema": [],
    "rewrap": [],
    "console": [],
    "search": [],
    "media": [],
    "recovery": ["--events", "100000"],
    "key_copies": [],
    "pdf_export": [],
    "verify": [],
    "chain_cost": [],
    "relay": [],
    "gateway": ["--runs", "3"],
}
QUICK: dict[str, list[str]] = {
    "ingest": ["--seconds", "5"],
    "archiver": ["--events", "50000"],
    "freshness": ["--rate", "1000", "--seconds", "15"],
    "retention": ["--events", "100000"],
    "retrieval": ["--repeats", "3"],
    "index_schema": ["--events", "50000", "--rounds", "1"],
    "rewrap": ["--keys", "20000", "--batch-sizes", "1000"],
    "console": ["--messages", "100000", "--queries", "20", "--runs", "10"],
    "search": ["--messages", "100000", "--people", "5000", "--queries", "20"],
    "media": ["--documents", "4", "--megabytes", "20"],
    "recovery": ["--events", "20000"],
    "key_copies": ["--events", "20000", "--rounds", "1"],
    "pdf_export": ["--messages", "1000", "--volume-sizes", "500"],
    "verify": ["--objects", "100"],
    "chain_cost": ["--events", "20000", "--rounds", "1"],
    "relay": ["--backlog", "5000", "--rate", "1000", "--seconds", "10"],
    "gateway": ["--seconds", "5", "--runs", "2"],
}
# A smoke run: every benchmark end to end at sizes that take seconds, so that none can rot unnoticed
# (tests/integration/test_bench_smoke.py runs it in `make test`). Its figures measure nothing.
SMOKE: dict[str, list[str]] = {
    "ingest": ["--seconds", "1", "--connections", "2", "--bodies", "50"],
    "archiver": ["--events", "500", "--partitions", "2"],
    "freshness": ["--rate", "50", "--seconds", "2", "--sample-s", "1"],
    "retention": ["--events", "200", "--old-object-records", "50", "--people", "50", "--ceiling-objects", "100"],
    "retrieval": ["--repeats", "1", "--messages", "50", "--others", "200", "--batch", "100", "--people", "20"],
    "index_schema": ["--events", "500", "--batch", "100", "--rounds", "1"],
    "rewrap": ["--keys", "200", "--batch-sizes", "100"],
    "console": [
        *("--messages", "300", "--people", "30", "--heavy", "60", "--days", "3"),
        *("--queries", "4", "--budget-s", "5", "--runs", "10"),
    ],
    "search": ["--messages", "2000", "--people", "300", "--days", "30", "--queries", "2", "--skip-http"],
    "media": ["--documents", "1", "--megabytes", "1"],
    "recovery": ["--events", "300", "--partitions", "2"],
    "key_copies": ["--events", "300", "--rounds", "1"],
    "pdf_export": ["--messages", "10", "--volume-sizes", "10", "--images", "1"],
    "verify": ["--objects", "5", "--object-mb", "0.1"],
    "chain_cost": ["--events", "300", "--rounds", "1"],
    "relay": ["--backlog", "200", "--destinations", "1", "--rate", "50", "--seconds", "1"],
    "gateway": ["--seconds", "1", "--connections", "2", "--warm-up", "0", "--runs", "1"],
}
PACKAGES = ("aiokafka", "asyncpg", "boto3", "cryptography", "orjson", "uvicorn", "fastapi", "prometheus-client")


def command_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not found"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def versions() -> dict[str, str]:
    stack = (REPO_ROOT / "deploy" / "local" / "stack.sh").read_text()
    pinned = {
        line.split("=")[0]: line.split("=")[1].split()[0] for line in stack.splitlines() if "_VERSION=" in line[:20]
    }
    found = {
        "kafka": pinned.get("KAFKA_VERSION", "unknown"),
        "seaweedfs": pinned.get("SEAWEEDFS_VERSION", "unknown"),
        "postgresql": command_version(["psql", "--version"]),
        "prometheus": command_version(["prometheus", "--version"]),
        "python": sys.version.split()[0],
    }
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def run_one(name: str, args: list[str], started: float) -> dict[str, Any]:
    print(f"\n=== bench {name} {' '.join(args)}", flush=True)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=REPO_ROOT, check=False, timeout=3600)
    result = RESULTS / f"{'soak' if '--soak' in args else name}.json"
    if done.returncode != 0 or not result.exists() or result.stat().st_mtime < started:
        return {"status": "failed", "exit_code": done.returncode, "seconds": round(time.monotonic() - began)}
    document: dict[str, Any] = json.loads(result.read_text())
    return {"status": "ok", "seconds": round(time.monotonic() - began), **document}


def verdict(value: float, target: float, *, at_most: bool) -> str:
    met = value <= target if at_most else value >= target
    return "met" if met else "**missed**"


def plural(destinations: int) -> str:
    return f"{destinations} destination{'' if destinations == 1 else 's'}"


def summary_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict) for the figures that have a target."""
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, value: float, target: float, unit: str, *, at_most: bool = False) -> None:
        sign = "≤" if at_most else "≥"
        rows.append(
            (label, f"{value:,.2f} {unit}", f"{sign} {target:,} {unit}", verdict(value, target, at_most=at_most))
        )

    if (r := results.get("ingest", {})).get("status") == "ok":
        f = r["figures"]
        add("ingest requests/s", f["ingest"]["requests_per_s"], 5000, "req/s")
        add("ingest p99 latency", f["ingest"]["p99_ms"], 25, "ms", at_most=True)
        if f.get("cpu_ratio_to_bare") is not None:
            add("ingest CPU per request / bare ASGI's", f["cpu_ratio_to_bare"], 3.0, "", at_most=True)
    if (r := results.get("gateway", {})).get("status") == "ok":
        ranges = r["figures"]["ranges"]
        if ranges["added_p99_ms"]:
            add("gateway: latency added to a send, p99 (worst run)", ranges["added_p99_ms"][1], 5, "ms", at_most=True)
        if ranges["cpu_ratio_to_bare"]:
            add("gateway CPU per send / bare ASGI's (worst run)", ranges["cpu_ratio_to_bare"][1], 3.0, "", at_most=True)
    archived_us: float | None = None
    if (r := results.get("archiver", {})).get("status") == "ok":
        f = r["figures"]
        archived_us = f["cpu"]["machine_cpu_us_per_unit"]
        add("archiver events/s (until committed)", f["archiver_events_per_s"], 20000, "events/s")
        add("archiver peak RSS", f["archiver_peak_rss_mb"], 200, "MiB", at_most=True)
        add("whole machine CPU per archived event", archived_us, 150, "µs", at_most=True)
        add("PostgreSQL CPU per archived event", f["cpu"]["cpu_us_per_unit"]["postgres"], 30, "µs", at_most=True)
    if (r := results.get("freshness", {})).get("status") == "ok":
        f = r["figures"]
        add(
            f"webhook → durable p99 at {f['rate_events_per_s']:,.0f} events/s",
            f["webhook_to_durable_ms"]["p99"],
            2000,
            "ms",
            at_most=True,
        )
    if (r := results.get("retention", {})).get("status") == "ok":
        f = r["figures"]
        add("erasure: key destroyed", f["erasure_key_destroyed_seconds"], 1, "s", at_most=True)
        expired_us = f.get("retention_cpu_per_event", {}).get("machine_cpu_us_per_unit")
        if expired_us is not None and archived_us:
            add("machine CPU per expired / per archived event", expired_us / archived_us, 0.1, "", at_most=True)
    if (r := results.get("retrieval", {})).get("status") == "ok":
        f = r["figures"]
        add(
            "10,000-message conversation, format v2 (median)",
            f["conversation"]["v2"]["median_s"],
            0.5,
            "s",
            at_most=True,
        )
    if (r := results.get("index_schema", {})).get("status") == "ok":
        layouts = r["figures"]["layouts"]
        add("index CPU, binary keys / text keys", layouts["bytea_keys"]["ratio_to_text_keys"], 1.0, "", at_most=True)
    if (r := results.get("console", {})).get("status") == "ok":
        f = r["figures"]
        messages = f"{f['archive']['messages']:,} messages"
        for layer, label in (("actions", "Actions.search"), ("http", "console POST /search")):
            for count, words in (("one_word", "one word"), ("two_words", "two words")):
                cells = {band: c for band, c in f["search"][layer][count].items() if c.get("n")}
                if not cells:
                    continue
                worst = max(cells, key=lambda band: cells[band]["p95_ms"])
                add(
                    f"keyword search p95, {words}, {label} ({messages}; worst: {worst} words)",
                    cells[worst]["p95_ms"],
                    300,
                    "ms",
                    at_most=True,
                )
        timeline = f["timeline"]
        add(
            f"timeline first page of a {timeline['steps'][-1]['records']:,}-message conversation, console (p95)",
            timeline["http_first_page"]["p95_ms"],
            500,
            "ms",
            at_most=True,
        )
    if (r := results.get("search", {})).get("status") == "ok":
        f = r["figures"]
        messages = f"{f['index']['messages']:,} messages"
        for layer, label in (("actions", "Actions.search"), ("http", "console POST /search")):
            for who, cells in f["search"][layer].items():
                for count, words in (("one_word", "one word"), ("two_words", "two words")):
                    if count in cells:
                        add(
                            f"keyword search p95, most frequent words, {words}, {who}, {label} ({messages})",
                            cells[count]["p95_ms"],
                            300,
                            "ms",
                            at_most=True,
                        )
    if (r := results.get("media", {})).get("status") == "ok":
        f = r["figures"]
        burst = f"{f['documents']} × {f['document_bytes'] / 1e6:,.0f} MB documents in one POST"
        add(f"archiver peak RSS, {burst}", f["archiver_peak_rss_mb"], 300, "MiB", at_most=True)
        add(f"documents archived byte-exact, {burst}", f["byte_exact"], f["documents"], "")
    if (r := results.get("pdf_export", {})).get("status") == "ok":
        f = r["figures"]
        sizes = " / ".join(str(run["messages_per_volume"]) for run in f["runs"])
        add(
            f"PDF transcript peak RSS per volume process ({f['messages']:,} messages, volumes of {sizes})",
            f["peak_rss_mb"],
            300,
            "MiB",
            at_most=True,
        )
    if (r := results.get("verify", {})).get("status") == "ok":
        f = r["figures"]
        minutes = f["one_million_records_minutes"]
        add("wa-archive verify, 1,000,000 records (500 objects of 2.1 MB)", minutes, 30, "min", at_most=True)
    if (r := results.get("chain_cost", {})).get("status") == "ok":
        f = r["figures"]
        add("archiver CPU per event, hash chain overhead", f["chain_cpu_overhead_percent"], 3, "%", at_most=True)
    if (r := results.get("relay", {})).get("status") == "ok":
        f = r["figures"]
        add(
            f"relay lag p99 at {f['steady']['rate_per_s']:,} webhooks/s ({plural(f['backlog']['destinations'])})",
            f["steady"]["lag_p99_ms"],
            1000,
            "ms",
            at_most=True,
        )
    return rows


def markdown(report: dict[str, Any]) -> str:
    results: dict[str, dict[str, Any]] = report["results"]
    lines = [
        "# wa-archive benchmark report",
        "",
        f"{report['at']} · {report['mode']} run · {report['machine']['cpus']} CPUs · {report['machine']['platform']}",
        "",
        "## Targets",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(results)),
        "",
    ]
    failed = [name for name, r in results.items() if r.get("status") != "ok"]
    if failed:
        lines += [f"Failed: {', '.join(failed)} (see the output above the report).", ""]
    fresh = results.get("freshness", {})
    if fresh.get("status") == "ok":
        f = fresh["figures"]
        lines += [
            "## End-to-end freshness",
            "",
            f"{f['events_sent']:,} events at {f['rate_events_per_s']:,.0f} events/s for {f['seconds']} s "
            f"({f['achieved_events_per_s']:,} achieved), lost {f['lost']}: webhook → durable "
            f"p50 {f['webhook_to_durable_ms']['p50']:,} ms, p99 {f['webhook_to_durable_ms']['p99']:,} ms; "
            f"ingest answer p50 {f['ingest_answer_ms']['p50']} ms, p99 {f['ingest_answer_ms']['p99']} ms.",
            "",
        ]
    relay = results.get("relay", {})
    if relay.get("status") == "ok":
        b, st = relay["figures"]["backlog"], relay["figures"]["steady"]
        rates = " / ".join(f"{rate:,}" for rate in b["deliveries_per_s_per_destination"])
        lines += [
            "## Relay",
            "",
            f"A backlog of {b['webhooks']:,} webhooks to {plural(b['destinations'])} at once: {rates} "
            f"deliveries/s per destination, {b['relay_cpu_us_per_delivery']} µs of the relay's CPU per delivery. "
            f"At {st['rate_per_s']:,} webhooks/s for {st['seconds']} s ({st['webhooks']:,} journaled): lag "
            f"p50 {st['lag_p50_ms']} ms, p99 {st['lag_p99_ms']} ms, max {st['lag_max_ms']} ms.",
            "",
        ]
    rewrap = results.get("rewrap", {})
    if rewrap.get("status") == "ok":
        f = rewrap["figures"]
        lines += [
            "## KEK retirement: rewrap",
            "",
            "| keys | batch | keys/s | process CPU µs/key | PostgreSQL CPU µs/key | machine CPU µs/key |",
            "|---|---|---|---|---|---|",
            *(
                f"| {f['keys']:,} | {r['batch_size']:,} | {r['keys_per_s']:,} | {r['process_cpu_us_per_key']} | "
                f"{r['postgres_cpu_us_per_key']} | {r['machine_cpu_us_per_key']} |"
                for r in f["runs"]
            ),
            "",
        ]
    console = results.get("console", {})
    if console.get("status") == "ok":
        g = console["figures"]["index_growth"]
        lines += [
            "## Keyword index growth (review console)",
            "",
            f"Per message indexed ({g['messages']:,} messages): keyword_index {g['keyword_bytes_per_message']:,} "
            f"bytes (its GIN {g['keyword_gin_bytes_per_message']:,}; {g['keyword_rows_per_message']} rows per "
            f"message, {g['tokens_per_row']} tokens per row), beside archived_events' "
            f"{g['archived_events_bytes_per_message']:,} bytes ({g['keyword_share_of_events_bytes']:.0%}).",
            "",
        ]
    soak = results.get("soak", {})
    if soak.get("status") == "ok":
        lines += [
            "## Soak (30 min at 1,000 events/s): RSS per service, MiB",
            "",
            "| service | first | last | peak | growth |",
        ]
        lines += ["|---|---|---|---|---|"]
        for name, s in soak["figures"]["rss_mb"].items():
            lines.append(f"| {name} | {s['first']} | {s['last']} | {s['peak']} | {s['growth']} |")
        lines.append("")
    lines += ["## Every figure", ""]
    for name, r in results.items():
        figures = {k: v for k, v in r.get("figures", {}).items() if k != "rss_series_mb"}
        lines += [f"### {name} ({r.get('status')}, {r.get('seconds')} s)", "", "```json", json.dumps(figures, indent=2)]
        lines += ["```", ""]
    lines += ["## Versions", "", *(f"- {k}: {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes, about ten minutes")
    sizes.add_argument(
        "--smoke", action="store_true", help="tiny sizes: every benchmark runs, its figures mean nothing"
    )
    parser.add_argument("--soak", action="store_true", help="add the 30-minute soak")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(FULL))
    args = parser.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan = dict({"smoke": SMOKE, "quick": QUICK, "full": FULL}[mode])
    if args.only:
        wanted = set(args.only.split(","))
        if unknown := wanted - set(plan):
            sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        plan = {name: plan[name] for name in plan if name in wanted}
    if args.soak:
        plan["soak"] = ["--soak"]
    ensure_stack()
    started = time.time()
    results = {
        name: run_one("freshness" if name == "soak" else name, bench_args, started) for name, bench_args in plan.items()
    }
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "machine": machine(),
        "versions": versions(),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = markdown(report)
    (RESULTS / "report.md").write_text(text, encoding="utf-8")
    print("\n" + text)
    print(f"written: {RESULTS / 'report.json'} and {RESULTS / 'report.md'}")
    sys.exit(1 if any(r["status"] != "ok" for r in results.values()) else 0)


if __name__ == "__main__":
    main()
