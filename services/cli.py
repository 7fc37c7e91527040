"""The ``wa-archive`` command: one entry point for operators, over the same core code as the services.

Configuration comes from the environment (``WA_RETENTION_…``, see deploy/local/demo.env); the operator's
identity for the audit log is ``WA_RETENTION_OPERATOR``. Every command that decrypts a person's records
requires ``--reason`` and writes an audit row.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from services.retention.access import ArchiveAccess
    from services.retention.settings import RetentionSettings

Handler = Callable[[argparse.Namespace], int]


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, else a line every 10%)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if sys.stderr.isatty():
            filled = int(fraction * 30)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
            if done >= total:
                sys.stderr.write("\n")
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            sys.stderr.write(f"{self.label}: {done}/{total}\n")
        sys.stderr.flush()


def parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def settings() -> RetentionSettings:
    from services.core.settings import load_settings  # noqa: PLC0415 — keep `wa-archive --help` fast
    from services.retention.settings import RetentionSettings  # noqa: PLC0415

    return load_settings(RetentionSettings)


def with_access(work: Callable[[ArchiveAccess, RetentionSettings], Awaitable[int]]) -> int:
    from services.retention.access import open_access  # noqa: PLC0415

    config = settings()

    async def run() -> int:
        access = await open_access(config)
        try:
            return await work(access, config)
        finally:
            await access.close()

    return asyncio.run(run())


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


# ---------------------------------------------------------------- commands
def cmd_replay(args: argparse.Namespace) -> int:
    from services.ingest.replay import load_bodies, replay  # noqa: PLC0415

    if args.generate:
        return generate_load(args)
    if not args.paths:
        print("give payload files or directories, or --generate EVENTS", file=sys.stderr)
        return 2
    bodies = load_bodies([Path(p) for p in args.paths], meta_escaping=not args.raw)
    if not bodies:
        print("no *.json payload files found", file=sys.stderr)
        return 2
    bodies = bodies * args.repeat
    report = asyncio.run(
        replay(
            bodies,
            url=args.url,
            app_secret=args.app_secret.encode(),
            concurrency=args.concurrency,
            attempts=args.attempts,
        )
    )
    print(
        f"sent {report.sent} webhook(s): {report.acknowledged} acknowledged, {len(report.failed)} failed, "
        f"{report.retries} retries; answers {dict(sorted(report.statuses.items()))}"
    )
    for failure in report.failed:
        print(f"  failed: {failure}", file=sys.stderr)
    return 0 if not report.failed else 1


def generate_load(args: argparse.Namespace) -> int:
    """Synthetic load for one fresh business number, paced at --rate events/s, each webhook retried until 2xx."""
    import random  # noqa: PLC0415

    from services.ingest.loadgen import Tenant, send_load, synthetic_deliveries  # noqa: PLC0415

    tenant = Tenant.fresh(random.Random())
    deliveries = list(synthetic_deliveries(args.generate, tenant=tenant))
    report = asyncio.run(
        send_load(
            deliveries,
            url=args.url,
            app_secret=args.app_secret.encode(),
            events_per_s=args.rate,
            concurrency=args.concurrency,
        )
    )
    print(f"business number {tenant.phone_number_id}: {report.summary()}")
    return 0 if report.acknowledged_deliveries == report.deliveries else 1


def cmd_messages(args: argparse.Namespace) -> int:
    from services.core.conversation import load_conversation, render_table  # noqa: PLC0415
    from services.core.subjects import ReasonRequired  # noqa: PLC0415

    if not args.reason:
        print(
            "refused: --reason is required to decrypt a person's messages (it is written to the audit log)",
            file=sys.stderr,
        )
        return 2

    async def work(access: ArchiveAccess, config: RetentionSettings) -> int:
        try:
            conversation = await load_conversation(
                access.pool,
                access.reader,
                access.pepper,
                contact=args.contact,
                phone_number_id=args.phone_number_id,
                actor=config.operator,
                reason=args.reason,
                since=args.since,
                until=args.until,
            )
        except ReasonRequired as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        if args.include_media:
            await save_media(access, conversation.messages, Path(args.include_media))
        if args.format == "jsonl":
            for message in conversation.messages:
                sys.stdout.write(orjson.dumps(message.to_json(), default=str).decode() + "\n")
        else:
            print(render_table(conversation.messages) or "(no archived messages)")
        if conversation.shredded_records:
            print(f"{conversation.shredded_records} record(s) were erased (keys destroyed)", file=sys.stderr)
        return 0

    return with_access(work)


async def save_media(access: ArchiveAccess, messages: Sequence[Any], out_dir: Path) -> None:
    from services.core.reader import RecordLocation  # noqa: PLC0415

    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    for message in messages:
        media = message.media
        if not media or media.get("status") != "archived" or not media.get("object_key"):
            continue
        location = RecordLocation(f"{message.event_id}.media", media["object_key"], 0)
        data = (await access.reader.open([location])).get(location.event_id)
        if data is not None:
            extension = (media.get("mime_type") or "application/octet-stream").split("/")[-1].split(";")[0]
            await asyncio.to_thread((out_dir / f"{message.event_id}.{extension}").write_bytes, data)


def cmd_search(args: argparse.Namespace) -> int:
    from services.core.search import SearchFilter, search_index  # noqa: PLC0415

    async def work(access: ArchiveAccess, _config: RetentionSettings) -> int:
        rows = await search_index(
            access.pool,
            access.pepper,
            SearchFilter(
                args.phone_number_id,
                args.contact,
                args.since,
                args.until,
                args.kind,
                args.type,
                args.deleted_only,
                args.edited_only,
                args.limit,
            ),
        )
        for row in rows:
            sys.stdout.write(orjson.dumps(row, default=str).decode() + "\n")
        print(f"{len(rows)} event(s)", file=sys.stderr)
        return 0

    return with_access(work)


def cmd_export(args: argparse.Namespace) -> int:
    from services.core.conversation import load_conversation  # noqa: PLC0415
    from services.retention.export import write_export  # noqa: PLC0415

    async def work(access: ArchiveAccess, config: RetentionSettings) -> int:
        Progress("decrypting")(0, 1)
        conversation = await load_conversation(
            access.pool,
            access.reader,
            access.pepper,
            contact=args.contact,
            phone_number_id=args.phone_number_id,
            actor=config.operator,
            reason=args.reason,
            purpose="export",
        )
        Progress("decrypting")(1, 1)
        formats = ["json", "html"] if args.format == "both" else [args.format]
        for path in write_export(conversation.messages, Path(args.out), formats=formats, request_ref=args.request_ref):
            print(path)
        return 0

    return with_access(work)


def cmd_erase(args: argparse.Namespace) -> int:
    from services.retention.erasure import erase_subject  # noqa: PLC0415

    async def work(access: ArchiveAccess, config: RetentionSettings) -> int:
        outcome = await erase_subject(
            access.pool,
            access.keyring,
            access.bucket,
            access.pepper,
            contact=args.contact,
            phone_number_id=args.phone_number_id,
            request_ref=args.request_ref,
            actor=config.operator,
        )
        print_json(outcome.proof())
        if outcome.status == "blocked":
            print(f"BLOCKED by legal hold(s): {', '.join(outcome.blocked_by)}", file=sys.stderr)
            return 3
        return 0

    return with_access(work)


def cmd_hold(args: argparse.Namespace) -> int:
    from services.retention.holds import HoldError, create_hold, list_holds, release_hold  # noqa: PLC0415

    async def work(access: ArchiveAccess, config: RetentionSettings) -> int:
        async with access.pool.acquire() as conn:
            if args.hold_command == "create":
                try:
                    hold = await create_hold(
                        conn,
                        access.pepper,
                        scope=args.scope,
                        case_ref=args.case_ref,
                        actor=config.operator,
                        waba_id=args.waba_id,
                        phone_number_id=args.phone_number_id,
                        contact=args.contact,
                    )
                except HoldError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                print_json(hold.to_json())
            elif args.hold_command == "release":
                released = await release_hold(conn, args.hold_id, actor=config.operator)
                if released is None:
                    print("no active hold with this id", file=sys.stderr)
                    return 1
                print_json(released.to_json())
            else:
                print_json([h.to_json() for h in await list_holds(conn, include_released=args.all)])
        return 0

    return with_access(work)


def cmd_retention(args: argparse.Namespace) -> int:
    from services.retention.run import retention_run  # noqa: PLC0415

    async def work(access: ArchiveAccess, _config: RetentionSettings) -> int:
        report = await retention_run(access.pool, access.bucket, dry_run=args.dry_run, progress=Progress("deleting"))
        if args.dry_run:
            for key in report.candidates:
                print(f"would delete {key}")
        print_json(report.to_json())
        return 0

    return with_access(work)


def cmd_audit(args: argparse.Namespace) -> int:
    from services.core.subjects import recent_audit  # noqa: PLC0415

    async def work(access: ArchiveAccess, _config: RetentionSettings) -> int:
        for row in await recent_audit(access.pool, args.limit):
            sys.stdout.write(orjson.dumps(row, default=str).decode() + "\n")
        return 0

    return with_access(work)


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    from services.archiver.rebuild import rebuild_index  # noqa: PLC0415

    async def work(access: ArchiveAccess, config: RetentionSettings) -> int:
        report = await rebuild_index(
            access.pool,
            access.bucket,
            access.policy,
            prefix=args.prefix or config.s3.prefix,
            progress=Progress("objects"),
        )
        print_json(report.__dict__)
        return 0 if report.unreadable_objects == 0 else 1

    return with_access(work)


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wa-archive", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def person(sub: argparse.ArgumentParser, *, phone_required: bool = False) -> None:
        sub.add_argument("--phone-number-id", required=phone_required, help="the business number's id (default: all)")
        sub.add_argument("--contact", required=True, help="the person's wa_id or business-scoped user id")

    replay = commands.add_parser("replay", help="sign payload files and POST them as Meta would")
    replay.add_argument("paths", nargs="*", metavar="DIR|FILE")
    replay.add_argument("--url", default="http://127.0.0.1:8080/webhooks/whatsapp")
    replay.add_argument("--app-secret", required=True, help="the Meta app secret to sign with")
    replay.add_argument("--raw", action="store_true", help="send the files' bytes as they are (no Meta escaping)")
    replay.add_argument("--concurrency", type=int, default=8)
    replay.add_argument("--attempts", type=int, default=5, help="tries per webhook on non-2xx, as Meta retries")
    replay.add_argument("--repeat", type=int, default=1, help="send every file this many times")
    replay.add_argument(
        "--generate",
        type=int,
        metavar="EVENTS",
        help="instead of files: synthetic webhooks holding EVENTS events, retried until acknowledged",
    )
    replay.add_argument("--rate", type=float, help="with --generate: events per second (default: as fast as possible)")
    replay.set_defaults(handler=cmd_replay)

    messages = commands.add_parser("messages", help="a person's conversation, decrypted (audited)")
    person(messages)
    messages.add_argument("--reason", help="why you read this person's messages (required; audited)")
    messages.add_argument("--since", type=parse_time)
    messages.add_argument("--until", type=parse_time)
    messages.add_argument("--include-media", metavar="DIR", help="save archived media files to DIR")
    messages.add_argument("--format", choices=["table", "jsonl"], default="table")
    messages.set_defaults(handler=cmd_messages)

    search = commands.add_parser("search", help="search index metadata (nothing decrypted)")
    search.add_argument("--phone-number-id")
    search.add_argument("--contact")
    search.add_argument("--since", type=parse_time)
    search.add_argument("--until", type=parse_time)
    search.add_argument("--kind")
    search.add_argument("--type")
    search.add_argument("--deleted-only", action="store_true")
    search.add_argument("--edited-only", action="store_true")
    search.add_argument("--limit", type=int, default=1000)
    search.set_defaults(handler=cmd_search)

    export = commands.add_parser("export", help="subject access / portability export (GDPR Art. 15/20)")
    person(export)
    export.add_argument("--reason", required=True)
    export.add_argument("--request-ref")
    export.add_argument("--format", choices=["json", "html", "both"], default="both")
    export.add_argument("--out", default=".", help="directory for the export files")
    export.set_defaults(handler=cmd_export)

    erase = commands.add_parser("erase", help="erase a person (GDPR Art. 17): destroy their key, delete their data")
    person(erase)
    erase.add_argument("--request-ref", required=True)
    erase.set_defaults(handler=cmd_erase)

    hold = commands.add_parser("hold", help="legal holds")
    hold_commands = hold.add_subparsers(dest="hold_command", required=True)
    create = hold_commands.add_parser("create")
    create.add_argument("--scope", choices=["waba", "phone_number", "contact", "conversation"], required=True)
    create.add_argument("--case-ref", required=True)
    create.add_argument("--waba-id")
    create.add_argument("--phone-number-id")
    create.add_argument("--contact")
    release = hold_commands.add_parser("release")
    release.add_argument("hold_id")
    listing = hold_commands.add_parser("list")
    listing.add_argument("--all", action="store_true", help="include released holds")
    hold.set_defaults(handler=cmd_hold)

    retention = commands.add_parser("retention", help="retention runs")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    run = retention_commands.add_parser("run")
    run.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    retention.set_defaults(handler=cmd_retention)

    audit = commands.add_parser("audit", help="the audit log")
    audit.add_argument("--limit", type=int, default=100)
    audit.set_defaults(handler=cmd_audit)

    rebuild = commands.add_parser("rebuild-index", help="rebuild the PostgreSQL index from the bucket")
    rebuild.add_argument("--prefix", help="object key prefix (default: the configured one)")
    rebuild.set_defaults(handler=cmd_rebuild_index)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    raise SystemExit(handler(args))


if __name__ == "__main__":
    main()
