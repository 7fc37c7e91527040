"""The ``wa-archive`` command: one entry point for operators, over the same actions as the admin API.

Configuration comes from the environment (``WA_RETENTION_…``, see deploy/local/demo.env; ``migrate`` alone reads
``WA_MIGRATOR_PG__DSN``, the schema owner's login); the operator's identity for the audit log is
``WA_RETENTION_OPERATOR``. Every command that decrypts a person's records
requires ``--reason`` and writes an audit row.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from services.cli.commands import (
    cmd_approvals,
    cmd_audit,
    cmd_case,
    cmd_chain,
    cmd_erase,
    cmd_erasure,
    cmd_erasures,
    cmd_export,
    cmd_exports,
    cmd_group_messages,
    cmd_hold,
    cmd_keys,
    cmd_messages,
    cmd_migrate,
    cmd_rebuild_index,
    cmd_recover,
    cmd_relay,
    cmd_replay,
    cmd_retention,
    cmd_search,
    cmd_verify,
    cmd_verify_export,
)
from services.core.vocabulary import CASE_STATUSES, EVENT_KINDS, HOLD_SCOPES
from services.evidence.package import BAG_FORMATS
from services.governance.grounds import REFUSAL_GROUNDS

Handler = Callable[[argparse.Namespace], int]


def parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wa-archive", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def person(sub: argparse.ArgumentParser, *, phone_required: bool = False) -> None:
        sub.add_argument("--phone-number-id", required=phone_required, help="the business number's id (default: all)")
        sub.add_argument("--contact", required=True, help="the person's wa_id or business-scoped user id")

    def output(sub: argparse.ArgumentParser, machine: str) -> None:
        sub.add_argument("--format", choices=["table", machine], default="table", help=f"a table, or {machine}")

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
    messages.add_argument("--phone-number-id", help="the business number's id (default: all)")
    who = messages.add_mutually_exclusive_group(required=True)
    who.add_argument("--contact", help="the person's wa_id or business-scoped user id")
    who.add_argument("--subject-ref", help="or the person's pseudonym, as `wa-archive search` prints it")
    messages.add_argument("--reason", help="why you read this person's messages (required; audited)")
    messages.add_argument("--since", type=parse_time)
    messages.add_argument("--until", type=parse_time)
    messages.add_argument("--include-media", metavar="DIR", help="save archived media files to DIR")
    output(messages, "jsonl")
    messages.set_defaults(handler=cmd_messages)

    group = commands.add_parser(
        "group-messages", help="a group's timeline: every participant's messages, joins and leaves (audited)"
    )
    group.add_argument("--group-id", required=True, help="the group's id (Cloud API Groups)")
    group.add_argument("--phone-number-id", required=True, help="the business number the group belongs to")
    group.add_argument("--reason", help="why you read this group's messages (required; audited)")
    output(group, "jsonl")
    group.set_defaults(handler=cmd_group_messages)

    search = commands.add_parser("search", help="search index metadata (nothing decrypted; audited)")
    search.add_argument("--phone-number-id")
    search.add_argument("--contact")
    search.add_argument("--since", type=parse_time)
    search.add_argument("--until", type=parse_time)
    search.add_argument("--kind", choices=EVENT_KINDS)
    search.add_argument("--type")
    search.add_argument("--deleted-only", action="store_true")
    search.add_argument("--edited-only", action="store_true")
    search.add_argument("--limit", type=int, default=1000)
    search.add_argument("--keywords", help="words of the message content (case and accents ignored)")
    search.set_defaults(handler=cmd_search)

    export = commands.add_parser(
        "export", help="subject access / portability export (GDPR Art. 15/20), or the export of a search result"
    )
    export.add_argument("--phone-number-id", help="the business number's id (default: all)")
    exported = export.add_mutually_exclusive_group(required=True)
    exported.add_argument("--contact", help="the person's wa_id or business-scoped user id")
    exported.add_argument(
        "--search",
        metavar="WORDS",
        help="export what this keyword search shows (with --phone-number-id, --since, --until, --deleted-only, "
        "--edited-only); formats pdf, rsmf, jsonl or all",
    )
    export.add_argument("--since", type=parse_time, help="with --search")
    export.add_argument("--until", type=parse_time, help="with --search")
    export.add_argument("--deleted-only", action="store_true", help="with --search")
    export.add_argument("--edited-only", action="store_true", help="with --search")
    export.add_argument("--reason", required=True)
    export.add_argument("--request-ref")
    export.add_argument(
        "--format",
        choices=["json", "html", "both", "pdf", "jsonl", "rsmf", "all"],
        default="both",
        help="all: the whole package (JSON, HTML, PDF, JSON Lines, media, RSMF) as a BagIt bag signed with the "
        "export signing key, in DIR (empty or new)",
    )
    export.add_argument("--out", default=".", metavar="DIR", help="directory for the export files")
    export.add_argument("--language", choices=["en", "fr"], default="en", help="of the PDF transcript")
    export.add_argument("--time-zone", default="UTC", help="the PDF's times, an IANA name (Europe/Paris)")
    export.add_argument("--messages-per-volume", type=int, default=500, help="the PDF is split in volumes of this")
    export.set_defaults(handler=cmd_export)

    verify_export = commands.add_parser(
        "verify-export", help="check an exported bag: every payload and tag hash, and the Ed25519 signature"
    )
    verify_export.add_argument("dir", metavar="DIR")
    trust = verify_export.add_mutually_exclusive_group()
    trust.add_argument("--public-key", metavar="FILE", help="the signing public key you trust (PEM or base64)")
    trust.add_argument("--fingerprint", metavar="HEX", help="the fingerprint you were given (SHA-256 of the key)")
    verify_export.set_defaults(handler=cmd_verify_export)
    exports = commands.add_parser("exports", help="export jobs (queued in the console, run by the retention service)")
    exports_commands = exports.add_subparsers(dest="exports_command", required=True)
    exports_list = exports_commands.add_parser("list", help="your recent export jobs, newest first")
    exports_list.add_argument("--all", action="store_true", help="everyone's jobs (DPO)")
    output(exports_list, "json")
    exports_show = exports_commands.add_parser("show", help="one export job: status, progress, files and hashes")
    exports_show.add_argument("job_id")
    exports.set_defaults(handler=cmd_exports)

    erase = commands.add_parser(
        "erase",
        help="request a person's erasure (GDPR Art. 17; four eyes): once a second DPO approves it, their key is "
        "destroyed and their data deleted",
    )
    person(erase)
    erase.add_argument("--request-ref", required=True)
    erase.add_argument("--reason", required=True, help="why (kept sealed with the request; shown to the approver)")
    erase.set_defaults(handler=cmd_erase)

    approvals = commands.add_parser(
        "approvals", help="four eyes: the requests waiting for your approval; approve or reject one (with a reason)"
    )
    approvals_commands = approvals.add_subparsers(dest="approvals_command", required=True)
    approvals_list = approvals_commands.add_parser("list", help="the requests you may decide (--all: every request)")
    approvals_list.add_argument("--all", action="store_true", help="every request, decided or not, newest first (DPO)")
    output(approvals_list, "json")
    approvals_show = approvals_commands.add_parser(
        "show", help="one request (a held message: also its draft as text, and who receives it; audited)"
    )
    approvals_show.add_argument("request_id")
    approvals_commands.add_parser(
        "sweep", help="publish the 'expired' decision of every held message whose hold ran out (the service does it)"
    )
    for name, what in (("approve", "approve it and carry it out as you"), ("reject", "reject it: nothing is done")):
        decide = approvals_commands.add_parser(name, help=f"{what} (never your own request)")
        decide.add_argument("request_id")
        decide.add_argument("--reason", required=True, help="why (kept sealed with the request)")
    approvals.set_defaults(handler=cmd_approvals)

    erasures = commands.add_parser("erasures", help="erasure requests and their deadlines")
    output(erasures, "json")
    erasures.set_defaults(handler=cmd_erasures)

    erasure = commands.add_parser("erasure", help="decide on an open erasure request: refuse it, extend it")
    erasure_commands = erasure.add_subparsers(dest="erasure_command", required=True)
    refuse = erasure_commands.add_parser("refuse", help="refuse on a legal ground (final; tell the person why)")
    refuse.add_argument("request_ref")
    refuse.add_argument("--ground", choices=REFUSAL_GROUNDS, required=True)
    extend = erasure_commands.add_parser("extend", help="extend the deadline by two months (once, Art. 12(3))")
    extend.add_argument("request_ref")
    extend.add_argument("--reason", required=True, help="why, as told to the person (no personal data)")
    erasure.set_defaults(handler=cmd_erasure)

    hold = commands.add_parser("hold", help="legal holds")
    hold_commands = hold.add_subparsers(dest="hold_command", required=True)
    create = hold_commands.add_parser("create")
    create.add_argument("--scope", choices=HOLD_SCOPES, required=True)
    create.add_argument("--case-ref", required=True)
    create.add_argument("--waba-id")
    create.add_argument("--phone-number-id")
    create.add_argument("--contact")
    create.add_argument("--group-id", help="the Cloud API group id, for a group hold")
    release = hold_commands.add_parser("release", help="request the release (four eyes: a second DPO approves it)")
    release.add_argument("hold_id")
    release.add_argument("--reason", required=True, help="why (kept sealed with the request)")
    listing = hold_commands.add_parser("list")
    listing.add_argument("--all", action="store_true", help="include released holds")
    output(listing, "json")
    hold.set_defaults(handler=cmd_hold)

    case_parser(commands)

    retention = commands.add_parser("retention", help="retention runs")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    run = retention_commands.add_parser("run")
    run.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    retention.set_defaults(handler=cmd_retention)

    audit = commands.add_parser("audit", help="the audit log")
    audit.add_argument("--limit", type=int, default=100)
    output(audit, "jsonl")
    audit.set_defaults(handler=cmd_audit)

    migrate = commands.add_parser("migrate", help="apply the database migrations, as the schema's owner")
    migrate.set_defaults(handler=cmd_migrate)

    rebuild = commands.add_parser("rebuild-index", help="rebuild the PostgreSQL index from the bucket")
    rebuild.add_argument("--prefix", help="object key prefix (default: the configured one)")
    rebuild.set_defaults(handler=cmd_rebuild_index)

    recover = commands.add_parser(
        "recover",
        help="after PostgreSQL was lost or restored: re-apply erasures, restore keys from their copies, rebuild "
        "the index (as the schema's owner: WA_MIGRATOR_PG__DSN)",
    )
    recover.set_defaults(handler=cmd_recover)

    verify = commands.add_parser(
        "verify",
        help="check every archived object against the hash chain and its signed checkpoints (missing, altered,"
        " unexpected); exit 1 on any finding",
    )
    verify.add_argument(
        "--settle-seconds",
        type=float,
        default=300.0,
        help="objects changed this recently are left to the next run when they differ (they may await their entry)",
    )
    verify.set_defaults(handler=cmd_verify)

    relay_parser(commands)

    chain = commands.add_parser("chain", help="the hash chain of archived objects")
    chain_commands = chain.add_subparsers(dest="chain_command", required=True)
    chain_commands.add_parser("checkpoint", help="sign the chain's heads now and store the checkpoint")
    baseline = chain_commands.add_parser(
        "baseline",
        help="once, after upgrading from a release without the chain: enter the digests of the objects written"
        " before it began (objects changed since are left to `verify`)",
    )
    baseline.add_argument("--reason", required=True, help="why (audited), e.g. the upgrade's change ticket")
    baseline.add_argument(
        "--settle-seconds", type=float, default=300.0, help="objects changed this recently are never entered"
    )
    chain.set_defaults(handler=cmd_chain)

    keys = commands.add_parser("keys", help="key-encryption keys: keys per KEK, rewrap to retire an old KEK")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    status = keys_commands.add_parser("status", help="how many data keys each KEK wraps; which can be removed")
    output(status, "json")
    rewrap = keys_commands.add_parser(
        "rewrap", help="rewrap every data key under one KEK (resumable; safe while the services run; audited)"
    )
    rewrap.add_argument("--to", required=True, metavar="KEK_ID", help="the KEK id to wrap every key with")
    rewrap.add_argument("--batch-size", type=int, default=1000, help="keys per transaction (default: 1000)")
    keys.set_defaults(handler=cmd_keys)
    return parser


def relay_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``wa-archive relay parked|replay DEST``: a relay destination's parked records (services/relay/replay.py),
    with the relay's settings (``WA_RELAY_…``)."""
    relay = commands.add_parser("relay", help="the relay's parked records: list them, deliver them again")
    relay_commands = relay.add_subparsers(dest="relay_command", required=True)
    parked = relay_commands.add_parser(
        "parked", help="what a destination's parking topic holds: offsets, time, reason, source; never a body"
    )
    parked.add_argument("destination", metavar="DEST", help="a destination's name in WA_RELAY_DESTINATIONS")
    parked.add_argument("--format", choices=["table", "json"], default="table", help="a table, or json")
    replay = relay_commands.add_parser(
        "replay",
        help="deliver a destination's parked records again, in order, signed as the relay signs them; resumes"
        " after what an earlier run delivered; exit 1 when it stops at a record it cannot deliver",
    )
    replay.add_argument("destination", metavar="DEST", help="a destination's name in WA_RELAY_DESTINATIONS")
    replay.add_argument("--from", dest="from_offset", type=int, metavar="OFFSET", help="first parking offset")
    replay.add_argument("--to", dest="to_offset", type=int, metavar="OFFSET", help="last parking offset (inclusive)")
    replay.add_argument("--dry-run", action="store_true", help="list what would be delivered; deliver nothing")
    replay.add_argument(
        "--retry-budget",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long one record is retried (408, 429, 5xx, no answer) before the run stops there",
    )
    relay.set_defaults(handler=cmd_relay)


def case_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``wa-archive case …``: cases, their custodians, holds, reviewers, tags, notes and saved searches."""
    case = commands.add_parser("case", help="cases: custodians, holds, reviewers, tags, notes, saved searches")
    case_commands = case.add_subparsers(dest="case_command", required=True)

    def custodian_options(sub: argparse.ArgumentParser, *, repeat: bool) -> None:
        action = "append" if repeat else "store"
        sub.add_argument("--number", action=action, metavar="PHONE_NUMBER_ID", help="a business number (its id)")
        sub.add_argument("--contact", action=action, help="a person: their wa_id or business-scoped user id")
        sub.add_argument("--subject-ref", action=action, help="a person by pseudonym, as `wa-archive search` prints it")
        sub.add_argument("--group-id", action=action, help="a Cloud API group id")

    opened = case_commands.add_parser("open", help="open a case (DPO; audited)")
    opened.add_argument("--title", required=True, help="the case's title (encrypted; never logged)")
    opened.add_argument("--ref", help="its reference (default: the next CASE-YYYY-NNNN)")
    opened.add_argument("--since", type=parse_time, help="the period's start")
    opened.add_argument("--until", type=parse_time, help="the period's end")
    custodian_options(opened, repeat=True)
    opened.add_argument("--with-holds", action="store_true", help="place a legal hold on every custodian")
    opened.add_argument("--reviewer", action="append", default=[], help="an operator to assign (repeatable)")
    opened.add_argument("--deleted-what", help="incident: what was deleted")
    opened.add_argument("--deleted-by", help="incident: by whom")
    opened.add_argument("--deleted-when", help="incident: when")
    opened.add_argument("--communicated", help="incident: what was communicated, to whom")

    listing = case_commands.add_parser("list", help="the cases (a reviewer: those assigned to them)")
    listing.add_argument("--status", choices=CASE_STATUSES)
    listing.add_argument("--format", choices=["table", "json"], default="table")

    shown = case_commands.add_parser("show", help="a case whole, its notes decrypted (audited)")
    shown.add_argument("ref")
    shown.add_argument("--format", choices=["table", "json"], default="table")

    closing = case_commands.add_parser(
        "close", help="request the closing of a case, releasing its holds (four eyes: a second DPO approves it)"
    )
    closing.add_argument("ref")
    closing.add_argument("--reason", required=True, help="why it is closed (audited; no personal data)")

    added = case_commands.add_parser("add-custodian", help="name one more custodian (DPO; its hold if the case has)")
    added.add_argument("ref")
    custodian_options(added, repeat=False)
    added.add_argument("--phone-number-id", help="with --contact: the person under this business number only")

    assign = case_commands.add_parser("assign", help="assign a reviewer (DPO; audited)")
    assign.add_argument("ref")
    assign.add_argument("reviewer", help="the operator's name, as they sign in")

    tag = case_commands.add_parser("tag", help="tag a message of the case (audited)")
    tag.add_argument("ref")
    tag.add_argument("event_id")
    tag.add_argument("tag", help="one lowercase word: relevant, privileged…")

    note = case_commands.add_parser("note", help="note a message (encrypted under its person's key; audited)")
    note.add_argument("ref")
    note.add_argument("event_id")
    note.add_argument("--text", required=True)

    search = case_commands.add_parser("search", help="save a keyword search on the case and run it, or run one")
    search.add_argument("ref")
    what = search.add_mutually_exclusive_group(required=True)
    what.add_argument("--keywords", help="save this search, then run it")
    what.add_argument("--saved", metavar="SEARCH_ID", help="run a saved search")
    search.add_argument("--custodian-id", help="with --keywords: only this custodian's messages")

    exported = case_commands.add_parser(
        "export",
        help="request the case's export as evidence (four eyes): once approved with `wa-archive approvals approve` "
        "on the machine holding the export signing key, a signed bag per person, per group and per conversation of "
        "a business number within the case's period, and a signed case.json",
    )
    exported.add_argument("ref")
    exported.add_argument("--out", required=True, metavar="DIR", help="an empty or new folder")
    exported.add_argument("--reason", required=True, help="why it is exported (audited)")
    exported.add_argument("--language", choices=["en", "fr"], default="en", help="of the PDF transcripts")
    exported.add_argument("--time-zone", default="UTC", help="times in the transcripts (IANA name)")
    exported.add_argument(
        "--formats",
        default=",".join(BAG_FORMATS),
        help=f"what each bag holds, comma-separated among {','.join(BAG_FORMATS)} (default: all of them)",
    )
    case.set_defaults(handler=cmd_case)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    raise SystemExit(handler(args))
