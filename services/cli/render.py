"""What the ``wa-archive`` commands print: JSON for machines, rich tables and progress bars for people.

A conversation's rows say what :func:`services.review.display.display` says a message shows, as plain text
(the console draws the same as HTML); a group's rows add who wrote or what happened to whom.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.core.plaintext import json_bytes
from services.review.display import Display, display

# rich is imported by the functions that use it: `wa-archive --help` stays fast.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from services.governance.cases import CaseFile, CaseSummary
    from services.governance.holds import Hold
    from services.review.assembly import ConversationMessage
    from services.review.correspondent import Correspondent


def print_json(value: Any) -> None:
    # json_bytes: a message's payload may hold an integer beyond 64 bits, which orjson alone refuses.
    sys.stdout.write(json_bytes(value, indent=True, default=str).decode() + "\n")


def print_jsonl(values: Sequence[Any]) -> None:
    for value in values:
        sys.stdout.write(json_bytes(value, default=str).decode() + "\n")


def stdout_console() -> Console:
    from rich.console import Console  # noqa: PLC0415

    # Cells are shown as they are: a message's "[image]" or ":smile:" is not rich markup. Piped, nothing wraps:
    # a row stays one line to grep.
    return Console(markup=False, highlight=False, emoji=False, width=None if sys.stdout.isatty() else 10_000)


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, live only in a terminal (elsewhere rich prints the final state once);
    yields the ``progress(done, total)`` callback the long actions take."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None, visible=False)  # shown from the first report on
        yield lambda done, total: bar.update(task, completed=done, total=total, visible=True)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and its noun in the right number, for the commands' English output: "1 record", "0 records",
    "2 keys" (``plural`` when the noun does not take an -s). Every count the commands print goes through it."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def correspondent_line(who: Correspondent) -> str | None:
    """Who a conversation is with, as the records read say: "Sheena Nelson · +1 650-555-1234 · business number
    +1 555-078-3881 (106540352242922)"; None when the records named nobody. The texts are control-free
    (services/review/correspondent.py): a profile name cannot move the terminal's cursor."""
    parts = [part for part in (who.name, who.number, who.username) if part]
    if not parts and who.user_id:
        parts.append(who.user_id)
    if who.earlier_names:
        parts.append("also seen as " + ", ".join(who.earlier_names))
    for number in who.business_numbers:
        shown = (
            f"{number.display_number} ({number.phone_number_id})" if number.display_number else number.phone_number_id
        )
        parts.append(f"business number {shown}")
    return " · ".join(parts) or None


def utc(timestamp: int) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS`` in UTC (the tables' first column)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def messages_table(messages: Sequence[ConversationMessage]) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table("when (UTC)", "", "message", "status", "changes")
    for message in messages:
        shown = display(message)
        table.add_row(
            utc(message.timestamp) if message.timestamp else message.received_at,
            "<-" if message.direction == "inbound" else "->",
            shown.plain(),
            shown.status or send_outcome_words(shown.send_outcome) or "-",
            changes(shown),
        )
    return table


def send_outcome_words(outcome: str | None) -> str | None:
    """The status column of a send through the gateway that has no Meta status: what the archive knows of it."""
    return {"unknown": "outcome unknown (may have reached the customer)", "pending": "outcome not archived yet"}.get(
        outcome or ""
    )


def group_table(messages: Sequence[ConversationMessage]) -> Table:
    """A group's timeline: who wrote or what happened to whom, with the same status and changes as a person's."""
    from rich.table import Table  # noqa: PLC0415

    table = Table("when (UTC)", "who", "message", "status", "changes")
    for message in messages:
        shown = display(message)
        who, what = group_change(message)
        table.add_row(
            utc(message.timestamp) if message.timestamp else message.received_at,
            who,
            what,
            shown.status or "-",
            changes(shown),
        )
    return table


def changes(shown: Display) -> str:
    """A message's edits (what it became) and its deletion, one per line."""
    lines = [f"edited: {edit.content.plain()}" for edit in shown.edits]
    if shown.deletion:
        at = f" at {utc(shown.deletion.at)}" if shown.deletion.at else ""
        lines.append(f"DELETED by {shown.deletion.by}{at}")
    return "\n".join(lines)


def group_change(message: ConversationMessage) -> tuple[str, str]:
    """Who and what, for a group timeline's table: the sender of a message (its ``from``), the participant a
    ``group_participant`` record is about and what happened to them, or the business for the group's own records
    and what it sent."""
    payload = message.payload if isinstance(message.payload, dict) else {}
    shown = display(message)
    if message.unreadable is not None:
        return "?", shown.plain()
    if message.kind == "group_participant":
        return _participant_of(payload), _participant_change(message.type, payload)
    if message.kind == "group":
        return "business", _group_update(message.type, payload)
    if message.direction == "outbound":
        return "business", shown.plain()
    sender = payload.get("from") or payload.get("from_user_id")
    return (str(sender) if sender else "?"), shown.plain()


def _participant_of(payload: dict[str, Any]) -> str:
    for key in ("added_participants", "removed_participants", "failed_participants"):
        people = payload.get(key)
        if isinstance(people, list) and people and isinstance(people[0], dict):
            person = people[0]
            return str(person.get("wa_id") or person.get("user_id") or person.get("input") or "?")
    return str(payload.get("wa_id") or payload.get("user_id") or "?")


def _participant_change(kind_type: str | None, payload: dict[str, Any]) -> str:
    if "failed_participants" in payload:
        return "[not removed: the removal failed]"
    if kind_type == "group_participants_add":
        reason = payload.get("reason")
        return f"[joined{' by ' + str(reason).replace('_', ' ') if reason else ''}]"
    if kind_type == "group_participants_remove":
        return "[left]" if payload.get("initiated_by") == "participant" else "[removed]"
    if kind_type == "group_join_request_created":
        return "[asked to join]"
    if kind_type == "group_join_request_revoked":
        return "[withdrew the request to join]"
    return f"[{kind_type}]"


def _group_update(kind_type: str | None, payload: dict[str, Any]) -> str:
    if kind_type == "group_create":
        return f"[group created] {payload.get('subject') or ''}".rstrip()
    if kind_type == "group_settings_update":
        changed = []
        for key, label in (("group_subject", "subject"), ("group_description", "description")):
            setting = payload.get(key)
            if isinstance(setting, dict) and setting.get("update_successful"):
                changed.append(f"{label}: {setting.get('text', '')}")
        picture = payload.get("profile_picture")
        if isinstance(picture, dict) and picture.get("update_successful"):
            changed.append("new picture")
        return f"[settings] {'; '.join(changed)}".rstrip()
    return f"[{kind_type}]"


def holds_table(holds: Sequence[Hold]) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table("hold_id", "case_ref", "scope", "covers", "created", "released")
    for hold in holds:
        covers = hold.waba_id or hold.phone_number_id or ""
        if hold.subject_count:
            covers = f"{covers} {counted(hold.subject_count, 'pseudonym')}".strip()
        table.add_row(
            hold.hold_id,
            hold.case_ref,
            hold.scope,
            covers,
            f"{hold.created_at:%Y-%m-%d %H:%M} by {hold.created_by}",
            f"{hold.released_at:%Y-%m-%d %H:%M}" if hold.released_at else "",
        )
    return table


def rows_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Table:
    """A table of JSON rows (audit entries, erasure requests), one column per key, None shown empty."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row[name] is None else str(row[name]) for name in columns))
    return table


def cases_table(cases: Sequence[CaseSummary]) -> Table:
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415 — a title's "[red]" is text, not markup

    table = Table("case_ref", "title", "status", "period", "opened", "reviewers")
    for case in cases:
        period = " – ".join(f"{m:%Y-%m-%d}" if m else "…" for m in (case.period_start, case.period_end))
        table.add_row(
            case.case_ref,
            Text(case.title),
            case.status,
            period if case.period_start or case.period_end else "",
            f"{case.opened_at:%Y-%m-%d} by {case.opened_by}",
            ", ".join(case.reviewers),
        )
    return table


def print_case(case: CaseFile) -> None:
    """A case for a person to read: its summary and incident, then tables of custodians, searches and messages."""
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415 — what operators wrote is text, not markup

    console = stdout_console()
    console.print(cases_table([case.summary]))
    if case.incident:
        for name, value in case.incident.to_json().items():
            if value:
                console.print(f"{name.replace('_', ' ')}: {value}", markup=False, highlight=False)
    custodians = Table("custodian_id", "custodian", "hold")
    for custodian in case.custodians:
        hold = "" if custodian.hold_id is None else "active" if custodian.hold_active else "released"
        custodians.add_row(custodian.custodian_id, custodian.label, hold)
    console.print(custodians)
    searches = Table("search_id", "keywords", "custodian_id", "saved")
    for search in case.searches:
        searches.add_row(
            search.search_id,
            Text(search.keywords),
            search.custodian_id or "",
            f"{search.created_at:%Y-%m-%d} by {search.created_by}",
        )
    console.print(searches)
    messages = Table("event_id", "tags", "notes")
    for message in case.messages:
        notes = "\n".join(f"{n.written_by}: {n.text if n.text is not None else '(erased)'}" for n in message.notes)
        messages.add_row(message.event_id, ", ".join(message.tags), Text(notes))
    console.print(messages)
