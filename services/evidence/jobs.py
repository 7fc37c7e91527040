"""Export jobs: an export runs in the background, reports its progress, and hands its files over from the work bucket.

A job is queued (:func:`queue_job`, by the action layer, which audits ``export.requested`` with who asked and
why), claimed by the retention service's export worker (:func:`claim_job`: ``FOR UPDATE SKIP LOCKED``, the oldest
first; a job left ``running`` without a heartbeat for ``stale_s`` — its worker died — is taken again, up to
:data:`MAX_ATTEMPTS` times), run (:func:`run_job`: the person's messages read through ``Actions.export`` — the
decrypting read audited as every export is —, the files written by the :data:`RENDERER` into a temporary folder
and uploaded to the work bucket under ``exports/<job id>/<file>``), and finished ``done`` with an expiry, or
``failed`` with fixed words. Once expired, its files are deleted and the job marked ``expired``
(:func:`expire_jobs`).

Every running job carries its attempt number: a worker whose job was taken again (it was presumed dead) finds
its updates refused (:class:`JobLost`) and stops, so two workers never both finish one job.

The renderer is one name (:data:`RENDERER`): today the JSON and HTML subject export of services/review/export.py,
as ``wa-archive export`` writes it; a renderer of services/evidence (PDF, RSMF, JSON Lines, the signed bag) takes
its place by changing that line. Nothing of a person's data enters PostgreSQL, logs or object keys: the job names
the person by pseudonym, its error is a fixed phrase, its output lists file names, sizes and SHA-256.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, get_args

import asyncpg
import orjson

from services.actions.operators import ProgressCallback
from services.core.bucket import ArchiveBucket
from services.core.db import ConnectionOrPool
from services.core.refusals import ActionRefused
from services.evidence.header import Custodian, ExportHeader
from services.evidence.jsonl import MediaStream, write_media
from services.evidence.package import write_package
from services.evidence.pdf import VolumeLimits, write_pdf
from services.evidence.pdf_text import text
from services.evidence.selection import scope_lines, search_title
from services.review.export import write_export

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.actions.reading import SubjectExport

log = logging.getLogger("wa_archive.exports")

JobStatus = Literal["queued", "running", "done", "failed", "expired"]
# What an operator may queue. A ``case`` job is queued only by an approved case export (services/actions/exporting.py
# queue_case_export) and written by its own producer.
JobScope = Literal["conversation", "subject_access", "search"]
JOB_SCOPES: Final[tuple[str, ...]] = get_args(JobScope)
JOB_STATUSES: Final[tuple[str, ...]] = get_args(JobStatus)
# What a status may become. `running` → `running` is a job taken again after its worker died.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "queued": frozenset({"running"}),
    "running": frozenset({"running", "done", "failed"}),
    "done": frozenset({"expired"}),
    "failed": frozenset(),
    "expired": frozenset(),
}
MAX_ATTEMPTS: Final = 3  # a job that killed its worker this often is failed, not tried for ever
KEY_ROOT: Final = "exports"
# The fixed words of a failed job (never an exception's text, which may quote data).
ERRORS: Final[dict[str, str]] = {
    "refused": "the export was refused (role, reason or person)",
    "storage": "the files could not be written to the work bucket",
    "render": "the export could not be rendered",
    "crashed": "its worker stopped repeatedly while running it",
    "unsigned": "a signed package was asked for and no export signing key is configured",
}


class JobLost(Exception):
    """The job is no longer this worker's: it was taken again by another (this one was presumed dead)."""


def may_become(current: str, new: str) -> bool:
    """Whether a job in status ``current`` may move to ``new`` (:data:`TRANSITIONS`)."""
    return new in TRANSITIONS.get(current, frozenset())


def object_key(job_id: str, name: str) -> str:
    """Where a job's file lives in the work bucket: the job's id and the file's name, no personal data."""
    return f"{KEY_ROOT}/{job_id}/{name}"


def claimable(status: str, heartbeat_at: datetime | None, attempts: int, *, now: datetime, stale_s: float) -> bool:
    """Whether a worker may take this job: queued, or running without a heartbeat for ``stale_s`` (its worker
    died) and not yet tried :data:`MAX_ATTEMPTS` times. The SQL of :func:`claim_job` says the same."""
    if status == "queued":
        return True
    if status != "running" or attempts >= MAX_ATTEMPTS:
        return False
    return heartbeat_at is None or heartbeat_at < now - timedelta(seconds=stale_s)


@dataclass(frozen=True, slots=True)
class JobFile:
    """One file of a finished job: its name (the last part of its object key), size and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportJob:
    """An export job as its row holds it."""

    job_id: str
    scope: str
    subject_ref: str | None
    since: datetime | None
    until: datetime | None
    formats: tuple[str, ...]
    language: str
    requested_by: str
    reason: str
    request_ref: str | None
    status: str
    step: str
    done: int
    total: int
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    files: tuple[JobFile, ...] = field(default_factory=tuple)
    # A search result's records (scope ``search``), frozen when it was asked for, and the search's description
    # (services/evidence/selection.py: no words, no contact); the role its records are read under when it runs.
    event_ids: tuple[str, ...] = ()
    selection: dict[str, Any] | None = None
    requester_role: str = "dpo"

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ExportJob:
        output = row["output"]
        files = orjson.loads(output) if isinstance(output, str | bytes) else (output or [])
        selection = row["selection"]
        if isinstance(selection, str | bytes):
            selection = orjson.loads(selection)
        return cls(
            job_id=str(row["job_id"]),
            scope=row["scope"],
            subject_ref=row["subject_ref"],
            since=row["since"],
            until=row["until"],
            formats=tuple(row["formats"]),
            language=row["language"],
            requested_by=row["requested_by"],
            reason=row["reason"],
            request_ref=row["request_ref"],
            status=row["status"],
            step=row["step"],
            done=row["done"],
            total=row["total"],
            error=row["error"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            expires_at=row["expires_at"],
            files=tuple(JobFile(f["name"], int(f["size"]), f["sha256"]) for f in files),
            event_ids=tuple(row["event_ids"] or ()),
            selection=selection,
            requester_role=row["requester_role"],
        )

    def file(self, name: str) -> JobFile | None:
        return next((f for f in self.files if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The job as the CLI and the status route show it (no reason: the audit log keeps it)."""
        return {
            "job_id": self.job_id,
            "scope": self.scope,
            "subject_ref": self.subject_ref,
            "formats": list(self.formats),
            "requested_by": self.requested_by,
            "status": self.status,
            "step": self.step,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "files": [f.to_json() for f in self.files],
            "selection": self.selection,
            "event_count": len(self.event_ids),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """What an operator asks to export: the person by pseudonym (or a search's records by event id, with the
    search's description; or, scope ``case``, the case by its reference in ``request_ref``), the period, the
    formats, who (and under which role the records are read) and why."""

    scope: JobScope | Literal["case"]
    subject_ref: str | None
    formats: tuple[str, ...]
    requested_by: str
    reason: str
    since: datetime | None = None
    until: datetime | None = None
    language: Literal["en", "fr"] = "en"
    request_ref: str | None = None
    event_ids: tuple[str, ...] = ()
    selection: Mapping[str, Any] | None = None
    requester_role: str = "dpo"


async def queue_job(conn: ConnectionOrPool, request: JobRequest, *, job_id: str | None = None) -> str:
    """Insert a queued job (with ``job_id``: that id, which a case's job takes from its approval request, so one
    approval makes one job); returns its id. The caller (the action layer) has checked the role and the reason.
    asyncpg's UniqueViolationError when the id is taken."""
    job_id = job_id or str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO export_jobs (job_id, scope, subject_ref, since, until, formats, language, requested_by, reason,"
        " request_ref, event_ids, selection, requester_role)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)",
        uuid.UUID(job_id),
        request.scope,
        request.subject_ref,
        request.since,
        request.until,
        list(request.formats),
        request.language,
        request.requested_by,
        request.reason,
        request.request_ref,
        list(request.event_ids),
        None if request.selection is None else orjson.dumps(dict(request.selection)).decode(),
        request.requester_role,
    )
    return job_id


async def get_job(conn: ConnectionOrPool, job_id: str) -> ExportJob | None:
    """The job, or None (also for an id that is not a UUID)."""
    try:
        wanted = uuid.UUID(job_id)
    except ValueError:
        return None
    row = await conn.fetchrow("SELECT * FROM export_jobs WHERE job_id = $1", wanted)
    return None if row is None else ExportJob.from_row(row)


async def recent_jobs(conn: ConnectionOrPool, *, requested_by: str | None, limit: int = 50) -> list[ExportJob]:
    """The newest jobs first: of one operator, or everyone's (``requested_by=None``)."""
    rows = await conn.fetch(
        "SELECT * FROM export_jobs WHERE $1::text IS NULL OR requested_by = $1 ORDER BY created_at DESC LIMIT $2",
        requested_by,
        limit,
    )
    return [ExportJob.from_row(row) for row in rows]


async def claim_job(
    pool: asyncpg.Pool, *, stale_s: float, now: datetime | None = None, job_id: str | None = None
) -> ExportJob | None:
    """Take the oldest claimable job (:func:`claimable`) and mark it ``running`` with a new attempt number; None
    when there is none. Jobs that crashed their worker :data:`MAX_ATTEMPTS` times are failed here first.
    ``job_id``: that job only (None when it is not claimable), for a caller that runs one job it just queued."""
    now = now or datetime.now(UTC)
    stale_before = now - timedelta(seconds=stale_s)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE export_jobs SET status = 'failed', step = 'failed', error = $1, finished_at = $2"
            " WHERE status = 'running' AND heartbeat_at < $3 AND attempts >= $4",
            ERRORS["crashed"],
            now,
            stale_before,
            MAX_ATTEMPTS,
        )
        row = await conn.fetchrow(
            "UPDATE export_jobs SET status = 'running', step = 'starting', done = 0, total = 0,"
            " attempts = attempts + 1, started_at = $1, heartbeat_at = $1"
            " WHERE job_id = (SELECT job_id FROM export_jobs"
            "   WHERE (status = 'queued' OR (status = 'running' AND heartbeat_at < $2 AND attempts < $3))"
            "   AND ($4::uuid IS NULL OR job_id = $4)"
            "   ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING *",
            now,
            stale_before,
            MAX_ATTEMPTS,
            None if job_id is None else uuid.UUID(job_id),
        )
    return None if row is None else ExportJob.from_row(row)


class Progress:
    """A running job's step and counts, as the renderer and the upload report them (synchronously: a renderer
    may run in a thread); :meth:`flush` writes them with the heartbeat. Refused when the job was taken again."""

    def __init__(self, pool: asyncpg.Pool, job: ExportJob) -> None:
        self.pool = pool
        self.job_id = uuid.UUID(job.job_id)
        self.attempt = job.attempts
        self.step, self.done, self.total = "starting", 0, 0

    def set(self, step: str, done: int, total: int) -> None:
        self.step, self.done, self.total = step, max(done, 0), max(total, 0)

    def callback(self, step: str) -> ProgressCallback:
        """A ``(done, total)`` callback for one step, the shape the CLI's progress bar and the renderers take."""
        return lambda done, total: self.set(step, done, total)

    async def flush(self) -> None:
        updated = await self.pool.execute(
            "UPDATE export_jobs SET step = $1, done = $2, total = $3, heartbeat_at = now()"
            " WHERE job_id = $4 AND status = 'running' AND attempts = $5",
            self.step,
            self.done,
            self.total,
            self.job_id,
            self.attempt,
        )
        if updated != "UPDATE 1":
            raise JobLost(str(self.job_id))

    async def beat(self, every_s: float) -> None:
        """Flush every ``every_s`` until cancelled (the heartbeat that tells a live worker from a dead one)."""
        while True:
            await asyncio.sleep(every_s)
            await self.flush()


class Renderer(Protocol):
    """Writes the files of an export into ``out_dir`` and returns them; reports ``(done, total)`` to ``progress``.
    Runs in the worker's event loop: CPU-bound work belongs in a thread or a subprocess."""

    def __call__(
        self,
        export: SubjectExport,
        header: ExportHeader,
        formats: Sequence[str],
        out_dir: Path,
        progress: ProgressCallback,
    ) -> Awaitable[list[Path]]: ...


async def render_subject_export(
    export: SubjectExport, header: ExportHeader, formats: Sequence[str], out_dir: Path, progress: ProgressCallback
) -> list[Path]:
    """Today's export: the JSON document and the HTML page of services/review/export.py (``json``, ``html``)."""
    progress(0, 1)
    written = await asyncio.to_thread(
        write_export,
        export.messages,
        out_dir,
        formats=[f for f in formats if f in ("json", "html")] or ["json"],
        request_ref=export.request_ref,
        now=export.generated_at,
    )
    progress(1, 1)
    return written


# The renderer a job runs when none is given (the worker gives package_renderer's, with the media and the key).
RENDERER: Renderer = render_subject_export
# What a job may ask for: the JSON document and HTML page of the subject export, the PDF transcript (its volumes),
# the JSON Lines of the records as archived with their media (one zip file), the RSMF 2.0 file (its media inside),
# and ``all``: the signed BagIt bag of every format and the media (services/evidence/package.py), as one zip file.
FORMATS: Final[tuple[str, ...]] = ("json", "html", "pdf", "jsonl", "rsmf", "all")
# The formats that read the records as archived (the JSON Lines, and the bag that holds them).
ARCHIVED_FORMATS: Final = frozenset({"jsonl", "rsmf", "all"})


def package_renderer(
    media: Callable[[SubjectExport], AsyncIterable[MediaStream]],
    signing_key: Ed25519PrivateKey | None,
    *,
    pdf_limits: VolumeLimits | None = None,
    checkpoint: Callable[[], Awaitable[str | None]] | None = None,
) -> Renderer:
    """The worker's renderer: ``json``/``html`` as the subject export writes them, ``pdf`` the transcript's volumes
    (the media decrypted first, for its thumbnails, each read audited by ``media``), ``jsonl`` the records as
    archived and their media zipped (``records-<id>.zip``), ``rsmf`` the RSMF 2.0 file, ``all`` the signed bag zipped
    (:class:`ExportNotSigned` when no signing key is configured), naming the checkpoint of the hash chain that
    ``checkpoint`` signs just before. Every format reads the media anew: a medium is
    never held in memory, only on the job's disk."""

    async def render(
        export: SubjectExport, header: ExportHeader, formats: Sequence[str], out_dir: Path, progress: ProgressCallback
    ) -> list[Path]:
        steps = [f for f in FORMATS if f in formats]
        written: list[Path] = []
        progress(0, len(steps))
        simple = [f for f in ("json", "html") if f in steps]
        if simple:
            written += await asyncio.to_thread(
                write_export,
                export.messages,
                out_dir,
                formats=simple,
                request_ref=export.request_ref,
                now=export.generated_at,
            )
            progress(len(simple), len(steps))
        done = len(simple)
        if "pdf" in steps:
            scratch = out_dir / ".pdf"
            files = await write_media(media(export), scratch)
            volumes = await asyncio.to_thread(write_pdf, export.messages, header, files, out_dir, limits=pdf_limits)
            await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
            written += [volume.path for volume in volumes]
            done += 1
            progress(done, len(steps))
        for part in ("jsonl", "rsmf"):
            if part not in steps:
                continue
            folder = out_dir / f".{part}-{header.export_id}"
            package = await write_package(
                folder,
                "jsonl" if part == "jsonl" else "rsmf",
                header=header,
                messages=export.messages,
                archived=export.archived,
                media=media(export),
                request_ref=export.request_ref,
            )
            if part == "rsmf":  # one file, its media inside
                (rsmf,) = package.paths
                written.append(await asyncio.to_thread(rsmf.rename, out_dir / rsmf.name))
            else:  # events.jsonl and media/: one zip
                archive = out_dir / f"records-{header.export_id}.zip"
                await asyncio.to_thread(zip_folder, folder, archive, root_name=f"records-{header.export_id}")
                written.append(archive)
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
            done += 1
            progress(done, len(steps))
        if "all" in steps:
            if signing_key is None:
                raise ExportNotSigned("no export signing key is configured")
            bag = out_dir / f".bag-{header.export_id}"
            pinned = await checkpoint() if checkpoint is not None else None
            await write_package(
                bag,
                "all",
                header=dataclasses.replace(header, checkpoint=pinned),
                messages=export.messages,
                archived=export.archived,
                media=media(export),
                request_ref=export.request_ref,
                signing_key=signing_key,
                pdf_limits=pdf_limits,
            )
            archive = out_dir / f"evidence-{header.export_id}.zip"
            await asyncio.to_thread(zip_folder, bag, archive, root_name=f"evidence-{header.export_id}")
            await asyncio.to_thread(shutil.rmtree, bag, ignore_errors=True)
            written.append(archive)
            progress(len(steps), len(steps))
        return written

    return render


class ExportNotSigned(Exception):
    """A signed bag was asked for and the worker has no export signing key."""


def zip_folder(folder: Path, archive: Path, *, root_name: str) -> None:
    """Every file of ``folder`` into the zip ``archive`` under ``root_name/``, read from disk piece by piece (a bag
    unzipped is the bag: ``wa-archive verify-export`` checks it)."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as bundle:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            bundle.write(path, f"{root_name}/{path.relative_to(folder).as_posix()}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def job_header(job: ExportJob, export: SubjectExport) -> ExportHeader:
    """The header of the job's export (services/evidence/header.py): the person as the records read name them
    (profile name, number or username; the pseudonym's start when they name none), in the job's language. It goes
    into the files only, never into the job's row. A search result's header is :func:`search_header`'s."""
    language: Literal["en", "fr"] = "fr" if job.language == "fr" else "en"
    if job.scope == "search":
        return search_header(
            job.selection or {},
            export,
            export_id=job.job_id,
            language=language,
            requested_by=job.requested_by,
            reason=job.reason,
        )
    assert job.subject_ref is not None
    label = export.correspondent.label or job.subject_ref[:12]
    custodians = [Custodian(kind="person", label=label, ref=job.subject_ref)]
    custodians += [
        Custodian(kind="business", label=number.display_number or number.phone_number_id, ref=number.phone_number_id)
        for number in export.correspondent.business_numbers
    ]
    return ExportHeader(
        scope="subject_access" if job.scope == "subject_access" else "conversation",
        title=text(language, "subject_title", person=label),
        export_id=job.job_id,
        custodians=tuple(custodians),
        period_start=job.since,
        period_end=job.until,
        time_zone="UTC",
        language=language,
        requested_by=job.requested_by,
        reason=job.reason,
        generated_at=export.generated_at,
    )


# Writes a job's files into the folder given and returns them; reports its step and counts to the Progress.
Producer = Callable[[Path, "Progress"], Awaitable[list[Path]]]


def subject_producer(
    read: Callable[[ExportJob], Awaitable[SubjectExport]], renderer: Renderer | None
) -> Callable[[ExportJob], Producer]:
    """The producer of a person's job: ``read`` decrypts their messages (``Actions.export``, audited), then the
    renderer writes them."""

    def producer(job: ExportJob) -> Producer:
        async def produce(folder: Path, progress: Progress) -> list[Path]:
            progress.set("decrypting", 0, 1)
            await progress.flush()
            export = await read(job)
            progress.set("rendering", 0, 1)
            await progress.flush()
            return await (renderer or RENDERER)(
                export, job_header(job, export), job.formats, folder, progress.callback("rendering")
            )

        return produce

    return producer


def search_header(
    description: Mapping[str, Any],
    export: SubjectExport,
    *,
    export_id: str,
    language: Literal["en", "fr"],
    requested_by: str,
    reason: str,
    time_zone: str = "UTC",
) -> ExportHeader:
    """The header of a search result's export: titled by the search's description (never its words), every person
    read a custodian (the pseudonym's start for a label: several people's records give no one name), the business
    numbers the records name, and the description's lines for the bag-info (services/evidence/selection.py)."""
    custodians = [Custodian(kind="person", label=ref[:12], ref=ref) for ref in export.subject_refs]
    custodians += [
        Custodian(kind="business", label=number.display_number or number.phone_number_id, ref=number.phone_number_id)
        for number in export.correspondent.business_numbers
    ]
    return ExportHeader(
        scope="search",
        title=search_title(description, language),
        export_id=export_id,
        custodians=tuple(custodians),
        # The search's own period (the records' when it named none: the PDF says so from the messages).
        period_start=datetime.fromisoformat(description["since"]) if description.get("since") else None,
        period_end=datetime.fromisoformat(description["until"]) if description.get("until") else None,
        time_zone=time_zone,
        language=language,
        requested_by=requested_by,
        reason=reason,
        generated_at=export.generated_at,
        case_ref=description.get("case_ref"),
        scope_details=tuple(scope_lines(description)),
    )


async def run_job(
    pool: asyncpg.Pool,
    job: ExportJob,
    work: ArchiveBucket,
    *,
    read: Callable[[ExportJob], Awaitable[SubjectExport]] | None = None,
    ttl_s: float,
    renderer: Renderer | None = None,
    produce: Producer | None = None,
    heartbeat_s: float = 1.0,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ExportJob:
    """Run a claimed job to ``done`` (files in the work bucket, expiring after ``ttl_s``) or ``failed`` (fixed
    words; the files already uploaded are deleted): ``produce`` writes its files (a person's job: ``read``
    decrypts the person's messages, ``Actions.export``, audited, and the renderer writes them; a case's job: the
    case export, services/actions/exporting.py). A refusal (:class:`ActionRefused`) fails it as ``refused``, a
    missing signing key (:class:`ExportNotSigned`) as ``unsigned``, anything else before the upload as
    ``render``. Raises :class:`JobLost` when another worker took the job."""
    if produce is None:
        if read is None:
            raise ValueError("run_job needs read or produce")
        produce = subject_producer(read, renderer)(job)
    progress = Progress(pool, job)
    beat = asyncio.create_task(progress.beat(heartbeat_s))
    folder = Path(tempfile.mkdtemp(prefix="wa-export-"))
    uploaded: list[str] = []
    error = "render"
    try:
        try:
            written = await produce(folder, progress)
        except ActionRefused:
            error = "refused"
            raise
        except ExportNotSigned:
            error = "unsigned"
            raise
        files = [JobFile(path.name, path.stat().st_size, await asyncio.to_thread(sha256_of, path)) for path in written]
        error = "storage"
        for done, (path, file) in enumerate(zip(written, files, strict=True)):
            progress.set("uploading", done, len(files))
            await progress.flush()
            key = object_key(job.job_id, file.name)
            uploaded.append(key)
            await work.put_file(key, path)
        finished = now()
        result = await pool.fetchrow(
            "UPDATE export_jobs SET status = 'done', step = 'done', done = $1, total = $1, finished_at = $2,"
            " expires_at = $3, output = $4::jsonb, heartbeat_at = $2"
            " WHERE job_id = $5 AND status = 'running' AND attempts = $6 RETURNING *",
            len(files),
            finished,
            finished + timedelta(seconds=ttl_s),
            orjson.dumps([f.to_json() for f in files]).decode(),
            uuid.UUID(job.job_id),
            job.attempts,
        )
        if result is None:
            raise JobLost(job.job_id)
        return ExportJob.from_row(result)
    except (JobLost, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.warning("export job %s failed (%s): %s", job.job_id, error, type(exc).__name__)
        if uploaded:
            with contextlib.suppress(Exception):
                await work.delete_current(uploaded)
        failed = await pool.fetchrow(
            "UPDATE export_jobs SET status = 'failed', step = 'failed', error = $1, finished_at = $2"
            " WHERE job_id = $3 AND status = 'running' AND attempts = $4 RETURNING *",
            ERRORS[error],
            now(),
            uuid.UUID(job.job_id),
            job.attempts,
        )
        if failed is None:
            raise JobLost(job.job_id) from exc
        return ExportJob.from_row(failed)
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError, JobLost, Exception):
            await beat
        shutil.rmtree(folder, ignore_errors=True)


async def expire_jobs(pool: asyncpg.Pool, work: ArchiveBucket, *, now: datetime | None = None) -> list[str]:
    """Delete the files of every ``done`` job past its expiry and mark it ``expired``; returns their ids. A job
    whose files the store refused to delete stays ``done`` and is tried again at the next sweep."""
    now = now or datetime.now(UTC)
    rows = await pool.fetch(
        "SELECT job_id, output FROM export_jobs WHERE status = 'done' AND expires_at <= $1 ORDER BY expires_at", now
    )
    expired: list[str] = []
    for row in rows:
        job_id = str(row["job_id"])
        output = row["output"]
        names = [f["name"] for f in (orjson.loads(output) if isinstance(output, str | bytes) else output or [])]
        errors = await work.delete_current([object_key(job_id, name) for name in names]) if names else {}
        if errors:
            log.warning("export job %s: %d file(s) could not be deleted", job_id, len(errors))
            continue
        await pool.execute(
            "UPDATE export_jobs SET status = 'expired', step = 'expired' WHERE job_id = $1 AND status = 'done'",
            row["job_id"],
        )
        expired.append(job_id)
    return expired
