"""The header every export carries: its scope, custodians, period, time zone, language, who asked and why.

The header names people (a custodian's profile name or number): it is personal data, written only into the export
itself, never into logs, object keys or PostgreSQL in clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

ExportScope = Literal["conversation", "search", "case", "subject_access"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Custodian:
    """One custodian of the export: a business number, a person or a group, as the reader should see it."""

    kind: Literal["business", "person", "group"]
    label: str  # profile name, number or username; a group's subject
    ref: str  # the pseudonym (or the business number's id): what ties it to the archive


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportHeader:
    """What an export is: printed at the top of a transcript, written to a bag's bag-info and an RSMF's headers."""

    scope: ExportScope
    title: str
    export_id: str  # the export job's id: the running document number of every page starts with it
    custodians: tuple[Custodian, ...]
    period_start: datetime | None
    period_end: datetime | None
    time_zone: str  # IANA name; times are shown in it, with its offset
    language: Literal["en", "fr"]
    requested_by: str  # the operator's name as the audit log holds it
    reason: str
    generated_at: datetime
    case_ref: str | None = None
    # The signed checkpoint of the archive's hash chain written when the export was made (its object key): what
    # pins the export to the archive as it stood (services/evidence/chain.py); None when no signing key is set.
    checkpoint: str | None = None
    # What the scope holds beyond the custodians and the period, as bag-info lines: a search-result export's
    # description (services/evidence/selection.py scope_lines), never its words.
    scope_details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MediaFiles:
    """The decrypted media of an export, already written to disk: event id of the message → its file (relative
    to the export's folder, where a renderer links or embeds it)."""

    root: Path
    by_event: Mapping[str, Path] = field(default_factory=dict)

    def path(self, event_id: str) -> Path | None:
        relative = self.by_event.get(event_id)
        return None if relative is None else self.root / relative
