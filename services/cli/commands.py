"""The ``wa-archive`` commands: each translates its arguments into one action (services/actions/layer.py) or
tool (services/tools/) and prints the result; refusals become exit codes (2: refused, 1: not found)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from services.cli.render import (
    cases_table,
    correspondent_line,
    counted,
    group_table,
    holds_table,
    messages_table,
    print_case,
    print_json,
    print_jsonl,
    progress_bar,
    rows_table,
    stdout_console,
)

# Only what `wa-archive --help` needs is imported at start; each command imports its own.
if TYPE_CHECKING:
    from services.actions.layer import Actions, ApprovalRequest, MediaFile, Operator, SubjectExport
    from services.governance.cases import CustodianSpec
    from services.relay.replay import ReplayReport
    from services.retention.settings import RetentionSettings

Work = Callable[["Actions", "Operator"], Awaitable[int]]


async def write_media_file(path: Path, media: MediaFile) -> None:
    """Write a media file as it is decrypted, chunk by chunk; a file found corrupt midway is removed, not left
    half written, and the error propagates."""
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in media.chunks:
            await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    await asyncio.to_thread(handle.close)


def settings() -> RetentionSettings:
    from services.core.settings import load_settings  # noqa: PLC0415 — keep `wa-archive --help` fast
    from services.retention.settings import RetentionSettings  # noqa: PLC0415

    return load_settings(RetentionSettings)


def with_actions(work: Work, *, as_owner: bool = False) -> int:
    """Run ``work`` with the actions over the configured archive, as the operator; translate refusals to exit codes.
    ``as_owner``: the database login is the schema owner's (``WA_MIGRATOR_PG__DSN``), for recovery alone.

    The operator has the ``dpo`` role: whoever holds the database credentials and keys can do everything anyway.
    Metrics are counted on a registry of the command's own (nothing scrapes a CLI).
    """
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from services.actions.access import open_access  # noqa: PLC0415
    from services.actions.layer import Actions, Operator  # noqa: PLC0415
    from services.core.crypto import KeyRingError  # noqa: PLC0415
    from services.core.refusals import ActionRefused, Forbidden, NotFound, ReasonRequired  # noqa: PLC0415
    from services.core.schema import SchemaNotCurrent  # noqa: PLC0415
    from services.governance.metrics import RetentionMetrics  # noqa: PLC0415

    config = settings()
    if as_owner:
        from services.core.settings import MigratorSettings, load_settings  # noqa: PLC0415

        config = config.model_copy(update={"pg": load_settings(MigratorSettings).pg})
    operator = Operator(config.operator, "dpo")

    async def run() -> int:
        # A person waits for no migrator: say so at once. Recovery re-applies the erasures itself, reported.
        access = await open_access(config, schema_wait_s=0, reapply_erasures_first=not as_owner)
        try:
            return await work(Actions(access, RetentionMetrics(CollectorRegistry())), operator)
        finally:
            await access.close()

    try:
        return asyncio.run(run())
    except ReasonRequired:
        print(
            "refused: --reason is required to decrypt a person's records (it is written to the audit log)",
            file=sys.stderr,
        )
        return ReasonRequired.exit_code
    except ActionRefused as exc:
        # Every refusal carries its exit code (services/core/refusals.py); the wording says who said no.
        prefix = "refused: " if isinstance(exc, Forbidden) else "" if isinstance(exc, NotFound) else "error: "
        print(f"{prefix}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyRingError as exc:  # e.g. a key wrapped by a KEK removed from the settings: the message names the KEK
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SchemaNotCurrent as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_migrate(_args: argparse.Namespace) -> int:
    """Apply the pending migrations as the schema's owner (``WA_MIGRATOR_PG__DSN``), the one step that may."""
    import asyncpg  # noqa: PLC0415

    from services.core.schema import migrate_dsn  # noqa: PLC0415
    from services.core.settings import MigratorSettings, load_settings  # noqa: PLC0415

    config = load_settings(MigratorSettings)
    try:
        applied = asyncio.run(migrate_dsn(config.pg.dsn.get_secret_value()))
    except asyncpg.InsufficientPrivilegeError as exc:
        print(f"refused: {exc} (WA_MIGRATOR_PG__DSN must be the login of the schema's owner)", file=sys.stderr)
        return 2
    print(f"applied {counted(len(applied), 'migration')}{': ' + ', '.join(applied) if applied else ''}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from services.tools.replay import load_bodies, replay  # noqa: PLC0415

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
        f"sent {counted(report.sent, 'webhook')}: {report.acknowledged:,} acknowledged, {len(report.failed)} failed, "
        f"{report.retries} retries; answers {dict(sorted(report.statuses.items()))}"
    )
    for failure in report.failed:
        print(f"  failed: {failure}", file=sys.stderr)
    return 0 if not report.failed else 1


def generate_load(args: argparse.Namespace) -> int:
    """Synthetic load for one fresh business number, paced at --rate events/s, each webhook retried until 2xx."""
    import random  # noqa: PLC0415

    from services.tools.loadgen import Tenant, send_load, synthetic_deliveries  # noqa: PLC0415

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
    async def work(actions: Actions, operator: Operator) -> int:
        conversation = await actions.messages(
            operator,
            contact=args.contact,
            subject_ref=args.subject_ref,
            phone_number_id=args.phone_number_id,
            reason=args.reason,
            since=args.since,
            until=args.until,
        )
        if args.include_media:
            out_dir = Path(args.include_media)
            await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
            async for media in actions.media(operator, conversation, reason=args.reason):
                await write_media_file(out_dir / media.filename, media)
        if args.format == "jsonl":
            print_jsonl([message.to_json() for message in conversation.messages])
        elif conversation.messages:
            who = correspondent_line(conversation.correspondent)
            if who:  # above the table: who it is with, as the records read say
                print(who)
            stdout_console().print(messages_table(conversation.messages))
        else:
            print("(no archived messages)")
        if conversation.shredded_records:
            print(f"{counted(conversation.shredded_records, 'record')} erased (keys destroyed)", file=sys.stderr)
        return 0

    return with_actions(work)


def cmd_group_messages(args: argparse.Namespace) -> int:
    async def work(actions: Actions, operator: Operator) -> int:
        timeline = await actions.group_messages(
            operator, group_id=args.group_id, phone_number_id=args.phone_number_id, reason=args.reason
        )
        if args.format == "jsonl":
            print_jsonl([message.to_json() for message in timeline.messages])
        elif timeline.messages:
            if timeline.subject:  # above the table: the group's name, as its records say
                print(f"group {timeline.subject}")
            stdout_console().print(group_table(timeline.messages))
        else:
            print("(no archived records of this group)")
        if timeline.shredded_records:
            print(f"{counted(timeline.shredded_records, 'record')} erased (keys destroyed)", file=sys.stderr)
        return 0

    return with_actions(work)


def cmd_search(args: argparse.Namespace) -> int:
    from services.review.search import SearchFilter  # noqa: PLC0415

    query = SearchFilter(
        phone_number_id=args.phone_number_id,
        contact=args.contact,
        since=args.since,
        until=args.until,
        kind=args.kind,
        type=args.type,
        deleted_only=args.deleted_only,
        edited_only=args.edited_only,
        limit=args.limit,
        keywords=args.keywords,
    )

    async def work(actions: Actions, operator: Operator) -> int:
        hits = await actions.search(operator, query)
        print_jsonl([hit.to_json() for hit in hits])
        print(f"{counted(len(hits), 'event')}", file=sys.stderr)
        return 0

    return with_actions(work)


# The export jobs' formats (services/evidence/jobs.py) an export above the four-eyes threshold is queued in.
JOB_FORMATS: Final[dict[str, tuple[str, ...]]] = {
    "json": ("json",),
    "html": ("html",),
    "both": ("json", "html"),
    "pdf": ("pdf",),
    "jsonl": ("all",),
    "rsmf": ("all",),
    "all": ("all",),
}


def cmd_export(args: argparse.Namespace) -> int:
    from services.evidence.bag import SigningKeyError  # noqa: PLC0415
    from services.evidence.package import PackageError, check_destination, subject_access_header, write_package  # noqa: PLC0415
    from services.evidence.pdf import VolumeLimits, time_zone  # noqa: PLC0415

    if args.search is not None:
        return export_search(args)
    out = Path(args.out)
    signing_key = None
    try:
        check_destination(out, args.format)  # before anything is decrypted
        if args.format == "all":
            time_zone(args.time_zone)
            signing_key = settings().export_signing.private_key()
    except (PackageError, SigningKeyError, ValueError) as exc:  # ValueError: an unknown time zone
        print(f"refused: {exc}", file=sys.stderr)
        return 2

    from services.actions.layer import SubjectExport as SubjectExportType  # noqa: PLC0415

    async def work(actions: Actions, operator: Operator) -> int:
        with_media = args.format in ("jsonl", "rsmf", "all")
        with progress_bar("decrypting") as progress:
            progress(0, 1)
            found = await actions.export_or_request(
                operator,
                contact=args.contact,
                phone_number_id=args.phone_number_id,
                reason=args.reason,
                request_ref=args.request_ref,
                keep_archived=with_media,
                formats=JOB_FORMATS[args.format],
            )
            progress(1, 1)
        if not isinstance(found, SubjectExportType):  # above the four-eyes threshold: export jobs once approved
            return print_requested(found)
        result = found
        if args.format == "pdf":
            return await export_pdf(actions, operator, result, args)
        header = subject_access_header(
            contact=args.contact,
            subject_refs=result.subject_refs,
            phone_number_id=args.phone_number_id,
            messages=result.messages,
            requested_by=operator.name,
            reason=args.reason,
            generated_at=result.generated_at,
            request_ref=result.request_ref,
            language=args.language,
            time_zone=args.time_zone,
        )
        if args.format == "all":
            # The archive's hash chain, signed as it stands now: the bag names the checkpoint that pins it.
            pinned = await actions.write_checkpoint(operator)
            header = dataclasses.replace(header, checkpoint=pinned[0] if pinned else None)
        media = actions.media(operator, result.conversation(), reason=args.reason) if with_media else None
        written = await write_package(
            out,
            args.format,
            header=header,
            messages=result.messages,
            archived=result.archived,
            media=media,
            request_ref=result.request_ref,
            signing_key=signing_key,
            pdf_limits=VolumeLimits(messages_per_volume=args.messages_per_volume),
        )
        for path in written.paths:
            print(path)
        if written.bag is not None:
            print(f"signed bag: {written.bag.path} ({counted(written.bag.payload_files, 'payload file')})")
            print(f"signing key fingerprint (sha256): {written.bag.fingerprint}")
        return 0

    return with_actions(work)


# What a search result exports as (services/evidence/package.py), each the one job format of the same name.
SEARCH_FORMATS: Final = ("pdf", "rsmf", "jsonl", "all")


def export_search(args: argparse.Namespace) -> int:
    """``wa-archive export --search WORDS``: what the keyword search shows, read now (audited as a search, then
    as an export, with the search's description and never its words) and written into ``--out`` in ``--format``;
    above the four-eyes threshold, a request for a DPO to approve (an export job once approved)."""
    from services.evidence.bag import SigningKeyError  # noqa: PLC0415
    from services.evidence.jobs import search_header  # noqa: PLC0415
    from services.evidence.package import PackageError, check_destination, write_package  # noqa: PLC0415
    from services.evidence.pdf import VolumeLimits, time_zone  # noqa: PLC0415
    from services.review.search import SearchFilter  # noqa: PLC0415

    if args.format not in SEARCH_FORMATS:
        print(f"refused: a search result exports as {', '.join(SEARCH_FORMATS)} (--format)", file=sys.stderr)
        return 2
    out = Path(args.out)
    signing_key = None
    try:
        check_destination(out, args.format)  # before anything is searched or decrypted
        time_zone(args.time_zone)
        if args.format == "all":
            signing_key = settings().export_signing.private_key()
    except (PackageError, SigningKeyError, ValueError) as exc:  # ValueError: an unknown time zone
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    query = SearchFilter(
        keywords=args.search,
        phone_number_id=args.phone_number_id,
        since=args.since,
        until=args.until,
        deleted_only=args.deleted_only,
        edited_only=args.edited_only,
    )

    async def work(actions: Actions, operator: Operator) -> int:
        with progress_bar("searching and decrypting") as progress:
            progress(0, 1)
            found = await actions.export_search(operator, query=query, reason=args.reason, formats=[args.format])
            progress(1, 1)
        if not isinstance(found, tuple):  # above the four-eyes threshold: an export job once approved
            return print_requested(found)
        export, description = found
        stamp = export.generated_at.strftime("%Y%m%dT%H%M%SZ")
        header = search_header(
            description,
            export,
            export_id=args.request_ref or f"SEARCH-{stamp}-{description['query'][:8]}",
            language=args.language,
            requested_by=operator.name,
            reason=args.reason,
            time_zone=args.time_zone,
        )
        if args.format == "all":
            pinned = await actions.write_checkpoint(operator)
            header = dataclasses.replace(header, checkpoint=pinned[0] if pinned else None)
        written = await write_package(
            out,
            args.format,
            header=header,
            messages=export.messages,
            archived=export.archived,
            media=actions.media(operator, export.conversation(), reason=args.reason),
            request_ref=header.export_id,
            signing_key=signing_key,
            pdf_limits=VolumeLimits(messages_per_volume=args.messages_per_volume),
        )
        for path in written.paths:
            print(path)
        print(f"{counted(description['hits'], 'record')} found by the search (query {description['query']})")
        if written.bag is not None:
            print(f"signed bag: {written.bag.path} ({counted(written.bag.payload_files, 'payload file')})")
            print(f"signing key fingerprint (sha256): {written.bag.fingerprint}")
        return 0

    return with_actions(work)


def cmd_verify_export(args: argparse.Namespace) -> int:
    """Check a bag; every failure on its own line; exit 1 when any, 2 when the key given cannot be read."""
    from services.evidence.bag import SigningKeyError, load_public_key, verify_bag  # noqa: PLC0415
    from services.evidence.case_export import is_case_export, verify_case  # noqa: PLC0415

    public_key = None
    if args.public_key:
        try:
            public_key = load_public_key(Path(args.public_key).read_bytes())
        except (OSError, SigningKeyError) as exc:
            print(f"error: --public-key {args.public_key}: {exc}", file=sys.stderr)
            return 2
    root = Path(args.dir)
    check = verify_case if is_case_export(root) else verify_bag
    result = check(root, public_key=public_key, expected_fingerprint=args.fingerprint)
    for failure in result.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if not result.ok:
        print(f"{args.dir}: NOT VERIFIED, {counted(len(result.failures), 'failure')}", file=sys.stderr)
        return 1
    checked = counted(result.files_checked, "file")
    print(f"{args.dir}: verified: {checked}, every hash; signature by key {result.fingerprint}")
    if not result.trusted:
        print(
            "note: the key is the bag's own; compare its fingerprint with the one you were given, or pass "
            "--fingerprint HEX or --public-key FILE",
            file=sys.stderr,
        )
    return 0


async def export_pdf(actions: Actions, operator: Operator, result: SubjectExport, args: argparse.Namespace) -> int:
    """The person's PDF transcript in ``--out``: their media files decrypted into ``media/`` first (each audited),
    then the volumes rendered one process each; prints every volume's path, pages and sha256."""
    from services.evidence.header import Custodian, ExportHeader, MediaFiles  # noqa: PLC0415
    from services.evidence.pdf import VolumeFailed, VolumeLimits, time_zone, write_pdf  # noqa: PLC0415
    from services.evidence.pdf_text import text  # noqa: PLC0415
    from services.review.conversation import Conversation  # noqa: PLC0415

    try:
        time_zone(args.time_zone)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    await asyncio.to_thread((out / "media").mkdir, parents=True, exist_ok=True)
    files = {}
    conversation = Conversation(list(result.subject_refs), result.messages, 0)
    async for media in actions.media(operator, conversation, reason=args.reason):
        await write_media_file(out / "media" / media.filename, media)
        files[media.event_id] = Path("media") / media.filename
    export_id = result.request_ref or result.generated_at.strftime("%Y%m%dT%H%M%SZ")
    custodians = [Custodian(kind="person", label=args.contact, ref=ref) for ref in result.subject_refs[:1]]
    if args.phone_number_id:
        custodians.append(Custodian(kind="business", label=args.phone_number_id, ref=args.phone_number_id))
    header = ExportHeader(
        scope="subject_access",
        title=text(args.language, "subject_title", person=args.contact),
        export_id=export_id,
        custodians=tuple(custodians),
        period_start=None,
        period_end=None,
        time_zone=args.time_zone,
        language=args.language,
        requested_by=operator.name,
        reason=args.reason,
        generated_at=result.generated_at,
    )
    limits = VolumeLimits(messages_per_volume=args.messages_per_volume)
    try:
        with progress_bar("PDF volumes") as progress:
            volumes = await asyncio.to_thread(
                write_pdf,
                result.messages,
                header,
                MediaFiles(out, files),
                out,
                limits=limits,
                on_volume=lambda volume, total: progress(volume.number, total),
            )
    except (VolumeFailed, ValueError) as exc:  # ValueError: fewer than one message per volume
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for volume in volumes:
        print(f"{volume.path}\t{volume.pages} pages\tsha256 {volume.sha256}")
    return 0


def cmd_exports(args: argparse.Namespace) -> int:
    async def work(actions: Actions, operator: Operator) -> int:
        if args.exports_command == "show":
            print_json((await actions.export_job(operator, args.job_id)).to_json())
            return 0
        jobs = [job.to_json() for job in await actions.export_jobs(operator, everyone=args.all)]
        if args.format == "json":
            print_json(jobs)
        else:
            columns = ["job_id", "scope", "requested_by", "status", "step", "done", "total", "created_at", "expires_at"]
            stdout_console().print(rows_table(jobs, columns))
        return 0

    return with_actions(work)


def cmd_erase(args: argparse.Namespace) -> int:
    """Request the person's erasure (four eyes): a second DPO approves it with ``wa-archive approvals approve``."""

    async def work(actions: Actions, operator: Operator) -> int:
        asked = await actions.request_erasure(
            operator,
            contact=args.contact,
            phone_number_id=args.phone_number_id,
            request_ref=args.request_ref,
            reason=args.reason,
        )
        return print_requested(asked)

    return with_actions(work)


def print_requested(asked: ApprovalRequest) -> int:
    """The request as JSON on stdout, and on stderr what happens next and who may approve it."""
    from services.actions.approvals import REQUEST_KINDS  # noqa: PLC0415

    now = datetime.now(UTC)
    print_json(asked.to_json(now))
    role = REQUEST_KINDS[asked.kind].approver_role
    print(
        f"requested {asked.request_id}: nothing is done until another operator with the {role!r} role (not "
        f"{asked.requested_by}) approves it before {asked.expires_at.isoformat(timespec='minutes')}:\n"
        f"  WA_RETENTION_OPERATOR=<their name> wa-archive approvals approve {asked.request_id} --reason '…'",
        file=sys.stderr,
    )
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    """``wa-archive approvals list|show|approve|reject|sweep``: four-eyes requests and their decisions (``sweep``:
    the held messages' expired decisions, as the retention service publishes them)."""
    from services.actions.layer import ExecutionContext  # noqa: PLC0415
    from services.evidence.bag import SigningKeyError  # noqa: PLC0415
    from services.review.drafts import draft_text  # noqa: PLC0415

    async def work(actions: Actions, operator: Operator) -> int:
        now = datetime.now(UTC)
        command = args.approvals_command
        if command == "list":
            found = await actions.approvals(operator, waiting_for_me=not args.all)
            rows = [r.to_json(now) for r in found]
            if args.format == "json":
                print_json(rows)
            else:
                columns = ["request_id", "kind", "state", "requested_by", "expires_at", "decided_by", "reason"]
                stdout_console().print(rows_table(rows, columns))
            return 0
        if command == "show":
            shown = await actions.approval(operator, args.request_id)
            if shown.kind != "send":
                print_json(shown.to_json(now))
                return 0
            # A held message: the draft as the customer would read it (its reading audited), and to whom.
            held = await actions.held_draft(operator, args.request_id)
            draft = held.to_json()
            print_json({**shown.to_json(now), "draft": draft})
            to = " ".join(part for part in (draft["recipient"], draft["recipient_number"]) if part) or "?"
            print(
                f"to {to} from {held.business_number}, written by {shown.requested_by}, held by "
                f"{', '.join(draft['rules'])} until {shown.expires_at.isoformat(timespec='minutes')}:\n"
                f"{draft_text(held.draft)}",
                file=sys.stderr,
            )
            return 0
        if command == "sweep":
            print_json({"published": await actions.publish_expired(operator)})
            return 0
        if command == "reject":
            print_json((await actions.reject(operator, args.request_id, reason=args.reason)).to_json(now))
            return 0
        request = await actions.approval(operator, args.request_id)
        context = ExecutionContext()
        if request.kind == "case.export":  # written here: signed with this machine's export signing key
            try:
                context = ExecutionContext(export_signing_key=settings().export_signing.private_key())
            except SigningKeyError as exc:
                print(f"refused: {exc}", file=sys.stderr)
                return 2
        done = await actions.approve(operator, args.request_id, reason=args.reason, context=context)
        print_json(done.request.to_json(now))
        return 0

    return with_actions(work)


def cmd_erasures(args: argparse.Namespace) -> int:
    async def work(actions: Actions, operator: Operator) -> int:
        requests = [request.to_json() for request in await actions.erasures(operator)]
        if args.format == "json":
            print_json(requests)
        else:
            columns = ["request_ref", "status", "received_at", "deadline_at", "completed_at", "holds"]
            columns += ["extended_at", "refusal_ground"]
            stdout_console().print(rows_table(requests, columns))
        return 0

    return with_actions(work)


def cmd_erasure(args: argparse.Namespace) -> int:
    async def work(actions: Actions, operator: Operator) -> int:
        if args.erasure_command == "refuse":
            request = await actions.refuse_erasure(operator, args.request_ref, ground=args.ground)
        else:
            request = await actions.extend_erasure(operator, args.request_ref, reason=args.reason)
        print_json(request.to_json())
        return 0

    return with_actions(work)


def cmd_hold(args: argparse.Namespace) -> int:
    async def work(actions: Actions, operator: Operator) -> int:
        if args.hold_command == "create":
            hold = await actions.create_hold(
                operator,
                scope=args.scope,
                case_ref=args.case_ref,
                waba_id=args.waba_id,
                phone_number_id=args.phone_number_id,
                contact=args.contact,
                group_id=args.group_id,
            )
            print_json(hold.to_json())
        elif args.hold_command == "release":
            return print_requested(await actions.request_hold_release(operator, args.hold_id, reason=args.reason))
        else:
            holds = await actions.holds(operator, include_released=args.all)
            if args.format == "json":
                print_json([h.to_json() for h in holds])
            else:
                stdout_console().print(holds_table(holds))
        return 0

    return with_actions(work)


def cmd_retention(args: argparse.Namespace) -> int:
    async def work(actions: Actions, operator: Operator) -> int:
        if args.dry_run:  # selects only: nothing to show progress of
            report = await actions.run_retention(operator, dry_run=True)
            for key in report.candidates:
                print(f"would delete {key}")
        else:
            with progress_bar("deleting") as progress:
                report = await actions.run_retention(operator, dry_run=False, progress=progress)
        print_json(report.to_json())
        return 0

    return with_actions(work)


def cmd_audit(args: argparse.Namespace) -> int:
    async def work(actions: Actions, operator: Operator) -> int:
        entries = [entry.to_json() for entry in await actions.audit_log(operator, limit=args.limit)]
        if args.format == "jsonl":
            print_jsonl(entries)
        else:
            columns = ["audit_id", "at", "actor", "action", "reason", "subject_ref", "record_count", "details"]
            stdout_console().print(rows_table(entries, columns))
        return 0

    return with_actions(work)


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    async def work(actions: Actions, operator: Operator) -> int:
        with progress_bar("objects") as progress:
            report = await actions.rebuild_index(operator, prefix=args.prefix, progress=progress)
        print_json(report.__dict__)
        return 0 if report.unreadable_objects == 0 else 1

    return with_actions(work)


def cmd_recover(_args: argparse.Namespace) -> int:
    """After a database loss or restore: erasures re-applied, keys restored from their copies, the index rebuilt."""

    async def work(actions: Actions, operator: Operator) -> int:
        print("re-applying erasures, restoring keys from their copies, then rebuilding the index", file=sys.stderr)
        with progress_bar("objects") as progress:
            report = await actions.recover(operator, progress=progress)
        print_json(report.to_json())
        unreadable = report.unreadable_erasure_records + report.unreadable_key_copies
        print(
            f"{counted(report.erasures_reapplied, 'erasure')} re-applied, "
            f"{counted(report.keys_restored, 'key')} restored, {counted(report.keys_copied, 'key')} copied; "
            f"{counted(unreadable, 'unreadable record')} of the erasure log or key copies",
            file=sys.stderr,
        )
        return 0 if unreadable == 0 and not report.index.get("unreadable_objects") else 1

    return with_actions(work, as_owner=True)


def cmd_verify(args: argparse.Namespace) -> int:
    """Walk the hash chain and the bucket; exit 1 when anything is missing, altered or unexpected, the chain has a
    fault or a checkpoint does not verify (the report, as JSON on stdout, says what)."""

    async def work(actions: Actions, operator: Operator) -> int:
        keys = sorted(actions.access.trusted_keys)
        print(f"checkpoints trusted when signed by: {', '.join(keys) or 'no key configured'}", file=sys.stderr)
        with progress_bar("objects hashed") as progress:
            report = await actions.verify_archive(operator, progress=progress, settle_s=args.settle_seconds)
        print_json(report.to_json())
        print(
            f"{counted(report.entries, 'chain entry', 'chain entries')} in {counted(report.streams, 'stream')},"
            f" {counted(report.checkpoints, 'checkpoint')} verified (latest {report.latest_checkpoint or 'none'}),"
            f" {counted(report.objects, 'object')}: {report.count('missing')} missing,"
            f" {report.count('altered')} altered, {report.count('unexpected')} unexpected;"
            f" {counted(len(report.chain_faults), 'chain fault')},"
            f" {counted(len(report.checkpoint_faults), 'bad checkpoint')}; {report.recent} too recent to judge",
            file=sys.stderr,
        )
        return 0 if report.clean else 1

    return with_actions(work)


def cmd_chain(args: argparse.Namespace) -> int:
    """``wa-archive chain checkpoint``: sign the chain's heads now (the retention service does it on a schedule);
    ``wa-archive chain baseline``: enter the objects written before the chain began."""

    if args.chain_command == "baseline":
        return _chain_baseline(args)

    async def work(actions: Actions, operator: Operator) -> int:
        written = await actions.write_checkpoint(operator)
        if written is None:
            print("error: no signing key configured (WA_RETENTION_SIGNING__PRIVATE_KEY)", file=sys.stderr)
            return 1
        key, checkpoint = written
        signer = actions.access.signing_key
        assert signer is not None
        from services.evidence.signing import fingerprint  # noqa: PLC0415

        print_json({"object": key, "at": checkpoint.at, "streams": len(checkpoint.heads)})
        print(f"signed by {fingerprint(signer.public_key())}", file=sys.stderr)
        return 0

    return with_actions(work)


def cmd_keys(args: argparse.Namespace) -> int:
    async def status(actions: Actions, operator: Operator) -> int:
        uses = [use.to_json() for use in await actions.key_status(operator)]
        if args.format == "json":
            print_json(uses)
        else:
            stdout_console().print(rows_table(uses, ["kek_id", "keys", "configured", "state"]))
        return 1 if any(use["state"] == "missing" for use in uses) else 0

    async def rewrap(actions: Actions, operator: Operator) -> int:
        kek = actions.access.keyring.kek
        current = kek.current_kek_id
        if args.to != current and args.to in kek.kek_ids:  # (an unknown target is refused by the action)
            print(
                f"warning: new keys are wrapped with {current!r}, the current KEK id of this configuration: "
                f"until every service has KEYS__CURRENT_KEK_ID={args.to!r}, they keep making keys under {current!r}",
                file=sys.stderr,
            )
        with progress_bar("rewrapping keys") as progress:
            report = await actions.rewrap_keys(
                operator, to_kek_id=args.to, batch_size=args.batch_size, progress=progress
            )
        print_json(report.to_json())
        print(f"{counted(report.rewrapped, 'key')} rewrapped under {args.to!r}", file=sys.stderr)
        if report.remaining:
            print(
                f"{counted(report.remaining, 'key')} still under other KEKs (locked meanwhile, or created under "
                "another current KEK): run the command again",
                file=sys.stderr,
            )
            return 1
        return 0

    try:
        return with_actions(status if args.keys_command == "status" else rewrap)
    except KeyboardInterrupt:
        print(
            "interrupted: the keys rewrapped so far stay rewrapped; run the same command again to continue",
            file=sys.stderr,
        )
        return 130


def custodians_of(args: argparse.Namespace) -> list[CustodianSpec]:
    """The custodians ``case open`` names (each option repeatable) or ``case add-custodian`` names (one)."""
    from services.governance.cases import CustodianSpec  # noqa: PLC0415

    def many(value: str | list[str] | None) -> list[str]:
        return [] if value is None else [value] if isinstance(value, str) else value

    number = getattr(args, "phone_number_id", None)
    return [
        *(CustodianSpec(kind="phone_number", phone_number_id=n) for n in many(args.number)),
        *(CustodianSpec(kind="person", contact=c, phone_number_id=number) for c in many(args.contact)),
        *(CustodianSpec(kind="person", subject_ref=r) for r in many(args.subject_ref)),
        *(CustodianSpec(kind="group", group_id=g) for g in many(args.group_id)),
    ]


def cmd_case(args: argparse.Namespace) -> int:
    """``wa-archive case …``: one case action per subcommand; JSON, or tables for a person to read."""
    from services.evidence.pdf import time_zone  # noqa: PLC0415
    from services.governance.cases import Incident  # noqa: PLC0415

    out = Path(args.out).absolute() if args.case_command == "export" else None
    if args.case_command == "export":
        try:  # before anything is asked: the approver writes it, with their export signing key
            time_zone(args.time_zone)
        except ValueError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2

    async def work(actions: Actions, operator: Operator) -> int:
        command = args.case_command
        if command == "open":
            incident = Incident(
                what_deleted=args.deleted_what,
                deleted_by=args.deleted_by,
                deleted_when=args.deleted_when,
                communicated=args.communicated,
            )
            summary = await actions.open_case(
                operator,
                title=args.title,
                case_ref=args.ref,
                period_start=args.since,
                period_end=args.until,
                custodians=custodians_of(args),
                with_holds=args.with_holds,
                incident=incident,
                reviewers=args.reviewer,
            )
            print_json(summary.to_json())
        elif command == "list":
            found = await actions.cases(operator, status=args.status)
            if args.format == "json":
                print_json([c.to_json() for c in found])
            else:
                stdout_console().print(cases_table(found))
        elif command == "show":
            case = await actions.case(operator, args.ref)
            if args.format == "json":
                print_json(case.to_json())
            else:
                print_case(case)
        elif command == "close":
            return print_requested(await actions.request_case_close(operator, args.ref, reason=args.reason))
        elif command == "add-custodian":
            specs = custodians_of(args)
            if len(specs) != 1:
                print("error: name one custodian: --number, --contact, --subject-ref or --group-id", file=sys.stderr)
                return 2
            print_json((await actions.add_custodian(operator, args.ref, specs[0])).to_json())
        elif command == "assign":
            assigned = await actions.assign_reviewer(operator, args.ref, args.reviewer)
            print(f"{args.reviewer} {'assigned to' if assigned else 'was already assigned to'} {args.ref}")
        elif command == "tag":
            tagged = await actions.tag_message(operator, args.ref, event_id=args.event_id, tag=args.tag)
            print(f"{args.event_id} {'tagged' if tagged else 'already tagged'} {args.tag.strip().lower()}")
        elif command == "note":
            note_id = await actions.note_message(operator, args.ref, event_id=args.event_id, text=args.text)
            print_json({"note_id": note_id, "event_id": args.event_id})
        elif command == "export":
            asked = await actions.request_case_export(
                operator,
                args.ref,
                out or Path(),
                reason=args.reason,
                language=args.language,
                time_zone=args.time_zone,
                formats=[name for name in args.formats.split(",") if name.strip()],
            )
            return print_requested(asked)
        else:
            search_id = args.saved
            if search_id is None:
                saved = await actions.save_search(
                    operator, args.ref, keywords=args.keywords, custodian_id=args.custodian_id
                )
                search_id = saved.search_id
                print(f"saved search {search_id}", file=sys.stderr)
            hits = await actions.run_saved_search(operator, args.ref, search_id)
            print_jsonl([hit.to_json() for hit in hits])
            print(counted(len(hits), "event"), file=sys.stderr)
        return 0

    return with_actions(work)


def _chain_baseline(args: argparse.Namespace) -> int:
    from services.evidence.verify import ChainFaulty  # noqa: PLC0415

    async def work(actions: Actions, operator: Operator) -> int:
        try:
            with progress_bar("objects entered") as progress:
                report = await actions.baseline_chain(
                    operator, args.reason, progress=progress, settle_s=args.settle_seconds
                )
        except ChainFaulty as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print_json(report.to_json())
        print(
            f"{counted(report.entered, 'object')} entered in"
            f" {counted(report.entries, 'baseline entry', 'baseline entries')}"
            f" (the chain began {report.chain_began or 'now'}); {counted(report.left, 'object')} not named by the chain"
            " changed after it began: `wa-archive verify` reports them",
            file=sys.stderr,
        )
        return 0

    return with_actions(work)


def cmd_relay(args: argparse.Namespace) -> int:
    """``wa-archive relay parked|replay DEST``: the relay's parking topics, with the relay's own settings
    (``WA_RELAY_…``: its destinations, secrets and Kafka login). Exit 2: no such destination or parking topic, or
    Kafka refused or did not answer; 1: a replay stopped at a record it could not deliver (what came before is
    delivered and kept)."""
    import getpass  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import os  # noqa: PLC0415

    from aiokafka.errors import KafkaError  # noqa: PLC0415

    from services.core.logs import configure_logging  # noqa: PLC0415
    from services.core.settings import load_settings  # noqa: PLC0415
    from services.relay.replay import ParkingTopicMissing, list_parked, replay_group, replay_parked  # noqa: PLC0415
    from services.relay.service import destination_of, http_client  # noqa: PLC0415
    from services.relay.settings import RelaySettings  # noqa: PLC0415

    config = load_settings(RelaySettings)
    configure_logging(config.log_level)
    chosen = next((d for d in config.destinations if d.name == args.destination), None)
    if chosen is None:
        known = ", ".join(d.name for d in config.destinations)
        print(f"error: no destination {args.destination!r} in WA_RELAY_DESTINATIONS (known: {known})", file=sys.stderr)
        return 2
    destination = destination_of(chosen)
    group = replay_group(config.group_prefix, chosen.name)
    try:
        if args.relay_command == "parked":
            listing = asyncio.run(list_parked(config.kafka, destination.parking_topic, group))
            rows = [
                {
                    **dataclasses.asdict(row),
                    "parked_at": datetime.fromtimestamp(row.parked_at_ms / 1000, UTC).isoformat(timespec="seconds"),
                }
                for row in listing
            ]
            for row in rows:
                del row["parked_at_ms"]
            if args.format == "json":
                print_json(rows)
            else:
                columns = ["partition", "offset", "parked_at", "reason", "source", "attempts", "replayed"]
                stdout_console().print(rows_table(rows, columns))
                waiting = sum(1 for row in listing if not row.replayed)
                held = counted(len(listing), "parked record")
                print(f"{held} in {destination.parking_topic}, {waiting:,} not replayed")
            return 0
        client = http_client(chosen)

        async def run() -> ReplayReport:
            try:
                return await replay_parked(
                    config.kafka,
                    destination,
                    client,
                    group,
                    from_offset=args.from_offset,
                    to_offset=args.to_offset,
                    dry_run=args.dry_run,
                    retry_budget_s=args.retry_budget,
                )
            finally:
                await client.aclose()

        report = asyncio.run(run())
    except ParkingTopicMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KafkaError, TimeoutError) as exc:
        # A refused grant (the relay's principal reads its parking topics in wa-relay-<name>-replay) or a broker
        # away; what was delivered before is committed, and the next run resumes after it.
        print(f"error: Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    offsets = f" (offsets {report.delivered[0]}-{report.delivered[-1]})" if report.delivered else ""
    verb = "would deliver" if report.dry_run else "delivered"
    summary = (
        f"{chosen.name}: {verb} {counted(len(report.delivered), 'parked record')}{offsets};"
        f" {report.already_replayed:,} replayed before"
    )
    print(summary)
    if report.stopped is not None:
        stop = report.stopped
        print(
            f"stopped at offset {stop.offset} (partition {stop.partition}): {stop.kind}: {stop.detail}; fix the cause"
            " and run again (it resumes there), or pass --from to go past it",
            file=sys.stderr,
        )
    if not report.dry_run:
        # Who replayed what, without a body: offsets, counts, reasons (the relay has no audit table of its own).
        operator = os.environ.get("WA_RETENTION_OPERATOR") or getpass.getuser()
        logging.getLogger("wa_archive.relay").info(
            "relay replay by %s: %s%s",
            operator,
            summary,
            f"; stopped at {report.stopped.partition}/{report.stopped.offset}: {report.stopped.kind}"
            if report.stopped
            else "",
        )
    return report.exit_status
