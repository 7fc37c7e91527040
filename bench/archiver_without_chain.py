"""The archiver with its hash chain switched off: the baseline of bench/chain_cost.py, nothing else.

Production has no such switch (an object outside the chain is reported by `wa-archive verify`): this module
replaces, in this process only, the archiver's Chain with nothing before running ``python -m services.archiver``;
the writer and the media sweep then append no entry.
"""

from __future__ import annotations

import runpy

import services.archiver.service as archiver_service


def no_chain(_bucket: object) -> None:
    return None


archiver_service.Chain = no_chain  # type: ignore[attr-defined,assignment]
runpy.run_module("services.archiver", run_name="__main__", alter_sys=True)
