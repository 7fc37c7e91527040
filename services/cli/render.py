"""What the ``wa-archive`` commands print: JSON for machines, rich tables and progress bars for people."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from services.core.plaintext import json_bytes

# rich is imported by the functions that use it: `wa-archive --help` stays fast.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from services.governance.holds import Hold
    from services.review.conversation import ConversationMessage


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


def messages_table(messages: Sequence[ConversationMessage]) -> Table:
    from rich.table import Table  # noqa: PLC0415

    from services.review.conversation import summary, utc  # noqa: PLC0415

    table = Table("when (UTC)", "", "message", "status", "changes")
    for message in messages:
        table.add_row(
            utc(message.timestamp) if message.timestamp else message.received_at,
            "<-" if message.direction == "inbound" else "->",
            summary(message),
            message.latest_status or "-",
            _changes(message),
        )
    return table


def group_table(messages: Sequence[ConversationMessage]) -> Table:
    """A group's timeline: who wrote or what happened to whom, with the same status and changes as a person's."""
    from rich.table import Table  # noqa: PLC0415

    from services.review.conversation import group_change, utc  # noqa: PLC0415

    table = Table("when (UTC)", "who", "message", "status", "changes")
    for message in messages:
        who, what = group_change(message)
        table.add_row(
            utc(message.timestamp) if message.timestamp else message.received_at,
            who,
            what,
            message.latest_status or "-",
            _changes(message),
        )
    return table


def _changes(message: ConversationMessage) -> str:
    from services.review.conversation import edit_summary, utc  # noqa: PLC0415

    changes = [f"edited: {edit_summary(edit)}" for edit in message.edits]
    if message.deletion:
        at = f" at {utc(message.deletion.at)}" if message.deletion.at else ""
        changes.append(f"DELETED by {message.deletion.by}{at}")
    return "\n".join(changes)


def holds_table(holds: Sequence[Hold]) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table("hold_id", "case_ref", "scope", "covers", "created", "released")
    for hold in holds:
        covers = hold.waba_id or hold.phone_number_id or ""
        if hold.subject_count:
            covers = f"{covers} {hold.subject_count} pseudonym(s)".strip()
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
