"""The archiver's CPU per event with the key copies (issue #24: at most +3 %) against the same archiver without them.

A key copy is written once per new person, before the first record sealed with their key: the cost grows with new
people, not with events. Both runs archive the same shape of traffic (bench/archiver.py: N one-event POSTs of 2,000
fresh people, so 2,000 new keys per run) and report the archiver's own CPU per event, steadier than rates on
a shared machine; the runs alternate (with, without, with, without …) so that a drift of the machine hits both.

    python -m bench.key_copies [--events 50000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench.archiver import alternate
from bench.common import ensure_stack, write_result


async def run(events: int, rounds: int) -> dict[str, Any]:
    figures = await alternate(events, rounds, "bench.archiver_without_key_copies")
    return {
        "events": events,
        "new_keys_per_run": 2000,
        "rounds": rounds,
        "archiver_cpu_us_per_event_with_key_copies": figures["with"],
        "archiver_cpu_us_per_event_without_key_copies": figures["without"],
        "key_copies_cpu_overhead_percent": figures["overhead_percent"],
        "targets": {"key_copies_cpu_overhead_percent": 3},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ensure_stack()
    write_result("key_copies", asyncio.run(run(args.events, args.rounds)))


if __name__ == "__main__":
    main()
