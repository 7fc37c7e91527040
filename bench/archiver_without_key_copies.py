"""The archiver with its key copies switched off: the baseline of bench/key_copies.py, nothing else.

Production has no such switch (a key without a copy outside PostgreSQL is lost with the database): this module
replaces, in this process only, the archiver's KeyCopies with nothing before running ``python -m
services.archiver``; the keyring then writes no copy.
"""

from __future__ import annotations

import runpy

import services.archiver.service as archiver_service


def no_copies(_bucket: object) -> None:
    return None


archiver_service.KeyCopies = no_copies  # type: ignore[attr-defined,assignment]
runpy.run_module("services.archiver", run_name="__main__", alter_sys=True)
