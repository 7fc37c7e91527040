"""The review console on a large archive (issue #14): keyword search, a 10,000-message timeline, and what the
blind keyword index costs on disk.

The archive: ``--messages`` (1,000,000) customer text messages under one business number of the bench's own, from
``--people`` (20,000) synthetic people, spread over ``--days`` (90) in arrival order, plus one person with
``--heavy`` (10,000) messages among them. Each message is 5-15 words drawn with a Zipf distribution (exponent 1)
from the vocabulary of its sender's language (60 % French, 40 % English): a head of everyday customer-service
words written below, then the French or English words of the Unicode CLDR names that Babel (a dependency of the
console) ships, accents included (territories, languages, currencies, units, months, time zones): about 2,300
words per language. People write in sessions (a few messages close together, as on a phone), one in ten messages
carries an order number. Every id is synthetic: the business number 555014…, the people's numbers 1555… (the
fictional 555 range), the bench's own wamids.

It is built with the real archiver, as bench/archiver.py does: a topic of its own prefilled with the webhook
POSTs as ingest journals them (one record per POST, keyed by the business number, so one partition), one archiver
process run until every offset is committed, then the topic is deleted. The build takes minutes on a small machine
and is reused: a manifest next to the archive's objects (``<prefix>.manifest.json`` in the bucket) records what
was built, and a later run that finds it, with the same parameters and every event indexed under the bench's
number and prefix, skips the build (``--rebuild`` forces it: the old objects, index rows and keys are removed
first). The build also measures what the index takes on disk (below) and keeps it in the manifest.

Measured, on that archive:

1. Keyword search, one word and two words, each from frequent, medium and rare words (``--queries`` each, the
   same queries for both layers, each cell bounded by ``--budget-s``): through the action layer
   (``Actions.search`` with ``SearchFilter(keywords=…, phone_number_id=…)``, the console's limit of hits) and
   through the console over HTTP (``POST /search``, the whole page rendered and read), p50 / p95 / max in ms.
   Target: p95 <= 300 ms.
2. The timeline's first page of the 10,000-message conversation through the console over HTTP (``POST
   /conversation`` with the reason already given in the session: the newest page), over ``--runs`` runs, beside
   the same page through the action layer (``Actions.conversation_page``, what the console calls) and the whole
   conversation through ``Actions.messages``; the page opened from a search hit (with a medium and a frequent
   word: their candidates are decrypted too); and one read step by step (the person's index rows, the GETs alone
   of the page's objects and of every object of the conversation, reader.open, assembly and bubbles).
   Target: <= 500 ms.
3. The index growth per message: ``pg_total_relation_size`` of the bench's ``keyword_index`` rows (heap, GIN and
   B-trees) and of its ``archived_events`` rows, per message indexed. The tables are shared with other runs, so
   the rows are copied into a scratch schema with the same indexes, one object at a time as the archiver writes
   them (the GIN grows as it does in production); the real tables' growth during the build is recorded beside.

``--profile`` adds a cProfile of one timeline request and of one frequent-word search (the console in this
process); ``--explain`` the PostgreSQL plans of one search of each kind, the custom plan and the generic plan a
connection may switch to; ``--custom-plans`` searches once more through the action layer with
``plan_cache_mode = force_custom_plan`` (a what-if beside the figures, not the console's setting). The console runs
as its own process (``python -m services.console``); the machine is shared: the load average is in the results.

    python -m bench.console [--messages 1000000] [--people 20000] [--heavy 10000] [--queries 100] [--runs 12]
                            [--rebuild] [--profile] [--explain] [--custom-plans]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import io
import itertools
import math
import os
import pstats
import random
import re
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from babel import Locale
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry

from bench.common import demo_env, ensure_stack, start_module, wait_http, write_result
from devtools import pipeline
from devtools.broker import committed_offsets, create_topic
from devtools.serving import free_port, serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.actions.layer import Actions, Operator
from services.console.factory import create_console_app
from services.console.routers.search import SEARCH_LIMIT
from services.console.settings import ConsoleSettings
from services.console.timeline import bubbles
from services.core.events import decode_webhook, webhook_scope
from services.core.identity import expand_subject_refs, resolve_subject_refs
from services.core.index import binary_keys
from services.core.journal import webhook_record
from services.core.kafka import AckedProducer
from services.core.keywords import words
from services.core.reader import RecordLocation
from services.core.settings import KafkaSettings
from services.core.vocabulary import rfc3339_millis
from services.governance.cases import CustodianSpec
from services.governance.metrics import RetentionMetrics
from services.review.assembly import assemble
from services.review.search import SearchFilter, search_index

MANIFEST_VERSION: Final = 1
SEARCH_TARGET_MS: Final = 300
TIMELINE_TARGET_MS: Final = 500
PRODUCE_CHUNK: Final = 10_000
REASON: Final = "benchmark of the review console (issue 14)"
# The console process signs the bench in with a name of its own (the audit rows say who searched), and a token
# drawn for the run (a token written here would be a published one).
BENCH_READER: Final = ("bench-console-reader", secrets.token_urlsafe(32))
FRENCH_SHARE: Final = 0.6
# A customer writes in sessions: messages close together, then silence. Sessions open at once (interleaved).
OPEN_SESSIONS: Final = 64
SESSION_MEAN: Final = 4
SESSION_MAX: Final = 12

# The head of each language's vocabulary, roughly by frequency in customer messages: the words a Zipf draw
# picks most. The tail is the language's CLDR words (cldr_words).
FRENCH_HEAD: Final = """
de la le et je à les des un une pour est en que du vous pas ma mon il ne sur au avec merci bonjour ce qui plus
on commande mais par ai svp oui non bien très tout faire été avoir livraison colis jour reçu toujours encore
depuis quand où comment pourquoi aujourd'hui demain hier semaine mois heure client service problème aide besoin
rembourser remboursement facture paiement prix carte numéro adresse code promo retour échange produit article
taille couleur stock disponible envoyer envoyé reçue attendre attente délai retard annulation annuler modifier
changer compte mot passe connexion courriel téléphone appel rappeler message réponse répondre question
information suivi transporteur relais magasin boutique site application erreur cassé abîmé défectueux manquant
remplacement garantie réparation technicien rendez-vous installation électricité gaz eau contrat abonnement
offre résiliation tarif mensuel annuel euros montant total reste payé prélèvement virement chèque banque crédit
remise réduction soldes cadeau noël anniversaire urgent rapidement vite lent déçu content satisfait parfait
super génial beaucoup bonne journée soirée cordialement madame monsieur nom prénom date naissance ville pays
vérifier confirmer confirmation validé refusé bloqué ouvert fermé livré expédié préparation entrepôt quantité
commandé pièce jointe photo reçois voudrais pourriez pouvez peux dois faut merci d'avance désolé excusez
inadmissible scandaleux réclamation litige médiateur avocat dossier référence colissimo chronopost facturé
deux trois premier dernière fois lundi mardi mercredi jeudi vendredi samedi dimanche matin midi après-midi soir
"""
ENGLISH_HEAD: Final = """
the to and my you is for of it in order on not have be this that with can please thanks hello hi was me we
your do at what when where how why today tomorrow yesterday week month hour customer service problem help need
refund invoice payment price card number address code promo return exchange product item size colour stock
available send sent received wait waiting delay late cancel cancellation change update account password login
email phone call back message reply answer question information tracking courier parcel package delivery store
shop website app error broken damaged faulty missing replacement warranty repair technician appointment
installation electricity gas water contract subscription offer plan fee monthly yearly pounds dollars amount
total balance paid direct debit transfer bank credit discount sale gift christmas birthday urgent quickly fast
slow disappointed happy satisfied perfect great thank much good morning evening regards madam sir name date
birth city country check confirm confirmation approved refused blocked open closed delivered shipped preparing
warehouse quantity ordered attached photo would could should must sorry apologies unacceptable complaint
dispute lawyer file reference charged twice three first last time monday tuesday wednesday thursday friday
saturday sunday noon afternoon night still again since already yet just only
"""
CLDR_SOURCES: Final = (
    "territories",
    "languages",
    "currencies",
    "scripts",
    "variants",
    "unit_display_names",
    "months",
    "days",
    "meta_zones",
    "time_zones",
)
_LETTERS = re.compile(r"[^\W\d_]+")


# ---------------------------------------------------------------------------------------------------- the texts
def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):  # Babel's locale data are mappings of their own
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from _strings(value)


def cldr_words(language: str) -> list[str]:
    """The words of 3+ letters of a language's CLDR display names (sorted, so the same Babel gives the same)."""
    locale = Locale.parse(language)
    found: set[str] = set()
    for source in CLDR_SOURCES:
        for text in _strings(getattr(locale, source)):
            # Not the abbreviations (AKDT, BCEAO): nobody types them in a message.
            found.update(word for word in _LETTERS.findall(text) if len(word) >= 3 and not word.isupper())
    return sorted(found)


@dataclass(frozen=True)
class Vocabulary:
    """One language's words by rank and the cumulative Zipf weights to draw them."""

    language: str
    words: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, language: str, head: str, seed: int) -> Vocabulary:
        ordered = list(dict.fromkeys(head.split()))
        folded = {next(iter(words(w)), w) for w in ordered}
        tail = [w for w in cldr_words(language) if next(iter(words(w)), w) not in folded]
        random.Random(f"{seed}-{language}").shuffle(tail)
        ranked = tuple(ordered + tail)
        return cls(language, ranked, tuple(itertools.accumulate(1.0 / rank for rank in range(1, len(ranked) + 1))))

    def draw(self, rng: random.Random, count: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cumulative, k=count)

    def band(self, low: float, high: float) -> list[str]:
        """The searchable words (one folded word of 2+ letters) ranked in [low, high): ranks when integers,
        fractions of the vocabulary's size when floats."""
        size = len(self.words)
        start, stop = (int(b * size) if isinstance(b, float) else b for b in (low, high))
        return [w for w in self.words[start:stop] if len(words(w)) == 1]


def vocabularies(seed: int) -> dict[str, Vocabulary]:
    return {"fr": Vocabulary.of("fr", FRENCH_HEAD, seed), "en": Vocabulary.of("en", ENGLISH_HEAD, seed)}


def vocabulary_digest(vocab: dict[str, Vocabulary]) -> str:
    return hashlib.sha256("\n".join(w for v in vocab.values() for w in v.words).encode()).hexdigest()[:16]


def message_text(rng: random.Random, vocab: Vocabulary) -> str:
    chosen = vocab.draw(rng, rng.randint(5, 15))
    chosen[0] = chosen[0][:1].upper() + chosen[0][1:]
    if rng.random() < 0.1:
        chosen.insert(rng.randrange(len(chosen) + 1), f"#{rng.randrange(10_000, 100_000)}")
    return " ".join(chosen) + rng.choice((".", " ?", "!", "", ""))


# ---------------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ArchivePlan:
    """What the bench archive holds; its number, prefix and people are derived from the sizes, so archives of
    different sizes (a quick run's, a full run's) live side by side."""

    messages: int
    people: int
    heavy: int
    days: int
    seed: int

    @property
    def total(self) -> int:
        return self.messages + self.heavy

    @property
    def phone_number_id(self) -> str:
        return f"555014{self.messages:09d}"

    @property
    def waba_id(self) -> str:
        return f"555114{self.messages:09d}"

    @property
    def prefix(self) -> str:
        return f"bench/console-{self.messages}"

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}.manifest.json"

    @property
    def heavy_wa_id(self) -> str:
        return "15559000000"

    def person_wa_id(self, index: int) -> str:
        return f"1555{index:07d}"

    def language_of(self, index: int) -> str:
        """French for 3 people in 5 (the heavy person too), English for the others."""
        return "fr" if index < 0 or (index * 2654435761 % 1000) < FRENCH_SHARE * 1000 else "en"


def senders(plan: ArchivePlan) -> Iterator[int]:
    """Who writes each message, in arrival order: -1 for the heavy person (at random positions), else a person
    index; people write in sessions of a few messages, several sessions open at once."""
    rng = random.Random(f"{plan.seed}-senders")
    heavy = set(rng.sample(range(plan.total), plan.heavy))

    def session() -> list[int]:
        length = min(SESSION_MAX, 1 + int(rng.expovariate(1 / (SESSION_MEAN - 1))))
        return [rng.randrange(plan.people), length]

    open_sessions = [session() for _ in range(OPEN_SESSIONS)]
    for position in range(plan.total):
        if position in heavy:
            yield -1
            continue
        slot = rng.randrange(OPEN_SESSIONS)
        person, left = open_sessions[slot]
        yield person
        if left <= 1:
            open_sessions[slot] = session()
        else:
            open_sessions[slot][1] = left - 1


def message_texts(plan: ArchivePlan, vocab: dict[str, Vocabulary]) -> Iterator[tuple[int, str]]:
    """(sender, text) of every message of the archive, in arrival order (the same for the same plan)."""
    rng = random.Random(f"{plan.seed}-texts")
    for sender in senders(plan):
        yield sender, message_text(rng, vocab[plan.language_of(sender)])


def webhook_chunks(plan: ArchivePlan, vocab: dict[str, Vocabulary], end: datetime) -> Iterator[list[tuple[bytes, str]]]:
    """The POSTs of the archive with the time ingest received each (a second after the message's own
    timestamp), PRODUCE_CHUNK at a time, in arrival order over ``plan.days`` up to ``end``."""
    start = int(end.timestamp()) - plan.days * 86_400
    step = plan.days * 86_400 / plan.total
    chunk: list[tuple[bytes, str]] = []
    for position, (sender, text) in enumerate(message_texts(plan, vocab)):
        wa_id = plan.heavy_wa_id if sender < 0 else plan.person_wa_id(sender)
        person = pipeline.Person(plan.waba_id, plan.phone_number_id, wa_id)
        wamid = f"wamid.BENCHCONSOLE{plan.messages}.{position:09d}"
        sent_at = start + int(position * step)
        received = rfc3339_millis(datetime.fromtimestamp(sent_at + 1, UTC))
        chunk.append((pipeline.text_message(person, wamid, text, sent_at), received))
        if len(chunk) == PRODUCE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------------------------- the build
@dataclass
class Bench:
    env: dict[str, str]
    plan: ArchivePlan
    access: ArchiveAccess

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.env['WA_KAFKA_PORT']}"

    @property
    def like(self) -> str:
        return self.plan.prefix + "/%"


async def read_manifest(bench: Bench) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = orjson.loads(await bench.access.bucket.get(bench.plan.manifest_key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return found


def plan_params(plan: ArchivePlan, vocab: dict[str, Vocabulary]) -> dict[str, Any]:
    return {**asdict(plan), "vocabulary": vocabulary_digest(vocab), "manifest_version": MANIFEST_VERSION}


async def indexed_counts(bench: Bench) -> tuple[int, int]:
    """(events indexed under the bench's number and prefix, objects under the prefix)."""
    async with bench.access.pool.acquire() as conn:
        events = await conn.fetchval(
            "SELECT count(*) FROM archived_events WHERE phone_number_id = $1 AND object_key LIKE $2",
            bench.plan.phone_number_id,
            bench.like,
        )
        objects = await conn.fetchval("SELECT count(*) FROM archive_objects WHERE object_key LIKE $1", bench.like)
    return int(events), int(objects)


async def reusable(bench: Bench, params: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The manifest of a complete bench archive with these parameters, or None and why it cannot be reused."""
    manifest = await read_manifest(bench)
    if manifest is None:
        return None, "no bench archive yet"
    if manifest.get("params") != params:
        return None, "the bench archive was built with other parameters"
    events, objects = await indexed_counts(bench)
    if events != manifest["events"] or objects != manifest["objects"]:
        return None, f"the bench archive is incomplete ({events:,} events, {objects:,} objects indexed)"
    return manifest, "reused"


async def remove_archive(bench: Bench) -> None:
    """Everything an earlier build left: objects, manifest, index rows, keyword rows, the people's keys."""
    keys = [obj.key async for obj in bench.access.bucket.list_objects(bench.plan.prefix + "/")]
    for start in range(0, len(keys), 500):
        await bench.access.bucket.delete_permanently(keys[start : start + 500])
    await bench.access.bucket.delete_permanently([bench.plan.manifest_key])
    async with bench.access.pool.acquire() as conn, conn.transaction():
        refs = [
            r["ref"]
            for r in await conn.fetch(
                "SELECT DISTINCT encode(subject_ref, 'hex') AS ref FROM archived_events"
                " WHERE phone_number_id = $1 AND subject_ref IS NOT NULL",
                bench.plan.phone_number_id,
            )
        ]
        await conn.execute("DELETE FROM keyword_index WHERE object_key LIKE $1", bench.like)
        await conn.execute("DELETE FROM archived_events WHERE phone_number_id = $1", bench.plan.phone_number_id)
        await conn.execute("DELETE FROM archive_objects WHERE object_key LIKE $1", bench.like)
        await conn.execute("DELETE FROM subject_aliases WHERE subject_ref = ANY($1::text[])", refs)
        await conn.execute("DELETE FROM subject_keys WHERE subject_ref = ANY($1::text[])", refs)
    print(f"removed the old bench archive: {len(keys):,} objects, {len(refs):,} people's keys", flush=True)


async def prefill(bench: Bench, topic: str, vocab: dict[str, Vocabulary], end: datetime) -> int:
    producer = AckedProducer(KafkaSettings(bootstrap_servers=bench.bootstrap, events_topic=topic), linger_ms=20)
    await producer.start()
    await producer.wait_connected(30)
    sent, started, key = 0, time.monotonic(), None
    try:
        for posts in webhook_chunks(bench.plan, vocab, end):
            # One business number: every POST has the key ingest gives the first (checked on it, as ingest does).
            key = key or webhook_scope(decode_webhook(posts[0][0]))[0]
            records = [
                webhook_record(topic, key, body, signature="sha256=bench", received_at=received)
                for body, received in posts
            ]
            await producer.produce(records, deadline_s=120)
            sent += len(records)
            if sent % 100_000 < PRODUCE_CHUNK or sent == bench.plan.total:
                rate = sent / (time.monotonic() - started)
                print(f"  prefilled {sent:>9,} / {bench.plan.total:,} POSTs ({rate:,.0f}/s)", flush=True)
    finally:
        await producer.stop()
    return sent


async def run_archiver(bench: Bench, topic: str, dlq: str, total: int) -> dict[str, Any]:
    group, port = f"bench-console-{uuid.uuid4().hex[:8]}", free_port()
    log = Path("/tmp") / f"bench-console-archiver-{group}.log"
    process = start_module(
        "services.archiver",
        {
            **bench.env,
            "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
            "WA_ARCHIVER_KAFKA__DLQ_TOPIC": dlq,
            "WA_ARCHIVER_GROUP_ID": group,
            "WA_ARCHIVER_S3__PREFIX": bench.plan.prefix,
            "WA_ARCHIVER_PORT": str(port),
            "WA_ARCHIVER_LOG_LEVEL": "WARNING",
        },
        log,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        started = time.monotonic()
        deadline = started + max(600.0, total / 400)  # bounded: far slower than this is a failure, not a figure
        done, shown = 0, started
        while done < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the archiver committed {done:,} of {total:,} within its deadline (log: {log})")
            if process.poll() is not None:
                raise RuntimeError(f"the archiver exited with {process.returncode} (log: {log})")
            await asyncio.sleep(1)
            done = sum((await committed_offsets(bench.bootstrap, group, topic, 1)).values())
            if time.monotonic() - shown >= 15 or done >= total:
                shown = time.monotonic()
                rate = done / (shown - started)
                eta = (total - done) / rate if rate else float("inf")
                print(f"  archived {done:>9,} / {total:,} ({rate:,.0f} events/s, {eta:,.0f} s to go)", flush=True)
        elapsed = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=120)
    return {"archiver_seconds": round(elapsed, 1), "archiver_events_per_s": round(total / elapsed)}


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


TABLE_SIZES: Final = (
    "SELECT pg_total_relation_size('keyword_index') AS keyword_total, pg_relation_size('keyword_index_tokens')"
    " AS keyword_gin, pg_total_relation_size('archived_events') AS events_total,"
    " (SELECT count(*) FROM keyword_index) AS keyword_rows"
)


async def table_sizes(bench: Bench) -> dict[str, int]:
    async with bench.access.pool.acquire() as conn:
        row = await conn.fetchrow(TABLE_SIZES)
    assert row is not None
    return {name: int(value) for name, value in dict(row).items()}


async def scratch_sizes(bench: Bench) -> dict[str, Any]:
    """The bench's keyword_index and archived_events rows copied into a scratch schema with the tables' own
    indexes, one object at a time in the archiver's order (so the GIN grows as it does), then measured."""
    schema = f"bench_console_sizes_{uuid.uuid4().hex[:6]}"
    # As the schema's owner: the services' roles may not create a schema (least privilege), and this one is dropped
    # at the end.
    conn = await asyncpg.connect(bench.env["WA_MIGRATOR_PG__DSN"])
    try:
        keys = [
            r["object_key"]
            for r in await conn.fetch(
                "SELECT object_key FROM archive_objects WHERE object_key LIKE $1 ORDER BY kafka_partition,"
                " first_offset",
                bench.like,
            )
        ]
        try:
            await conn.execute(
                f"CREATE SCHEMA {schema};"
                f" CREATE TABLE {schema}.keyword_index (LIKE public.keyword_index INCLUDING ALL);"
                f" CREATE TABLE {schema}.archived_events (LIKE public.archived_events INCLUDING ALL)"
            )
            for number, key in enumerate(keys):
                async with conn.transaction():
                    await conn.execute(
                        f"INSERT INTO {schema}.keyword_index SELECT * FROM public.keyword_index"  # noqa: S608
                        " WHERE object_key = $1",
                        key,
                    )
                    await conn.execute(
                        f"INSERT INTO {schema}.archived_events SELECT * FROM public.archived_events"  # noqa: S608
                        " WHERE object_key = $1",
                        key,
                    )
                if (number + 1) % 100 == 0:
                    print(f"  copied the index rows of {number + 1:,} / {len(keys):,} objects", flush=True)
            await conn.execute(f"ANALYZE {schema}.keyword_index; ANALYZE {schema}.archived_events")
            sizes = await conn.fetch(
                "SELECT c.relname, c.relkind::text AS relkind, pg_relation_size(c.oid) AS bytes,"
                " pg_total_relation_size(c.oid) AS total FROM pg_class c JOIN pg_namespace n ON n.oid ="
                " c.relnamespace WHERE n.nspname = $1",
                schema,
            )
            rows = await conn.fetchval(f"SELECT count(*) FROM {schema}.keyword_index")  # noqa: S608
            tokens = await conn.fetchval(
                f"SELECT sum(cardinality(tokens)) FROM {schema}.keyword_index"  # noqa: S608
            )
            events = await conn.fetchval(f"SELECT count(*) FROM {schema}.archived_events")  # noqa: S608
        finally:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()
    by_name = {r["relname"]: r for r in sizes}
    keyword_indexes = {
        r["relname"]: int(r["bytes"]) for r in sizes if r["relkind"] == "i" and r["relname"].startswith("keyword")
    }
    events_indexes = {
        r["relname"]: int(r["bytes"]) for r in sizes if r["relkind"] == "i" and r["relname"].startswith("archived")
    }
    keyword_total = int(by_name["keyword_index"]["total"])
    events_total = int(by_name["archived_events"]["total"])
    gin = next(v for k, v in keyword_indexes.items() if "tokens" in k)
    return {
        "messages": int(events),
        "keyword_rows": int(rows),
        "keyword_rows_per_message": round(int(rows) / int(events), 3),
        "tokens_per_row": round(int(tokens) / int(rows), 1),
        "keyword_index_total_bytes": keyword_total,
        "keyword_index_heap_bytes": int(by_name["keyword_index"]["bytes"]),
        "keyword_index_gin_bytes": gin,
        "keyword_index_indexes_bytes": keyword_indexes,
        "keyword_bytes_per_message": round(keyword_total / int(events), 1),
        "keyword_gin_bytes_per_message": round(gin / int(events), 1),
        "archived_events_total_bytes": events_total,
        "archived_events_indexes_bytes": events_indexes,
        "archived_events_bytes_per_message": round(events_total / int(events), 1),
        "keyword_share_of_events_bytes": round(keyword_total / events_total, 3),
    }


async def build(bench: Bench, params: dict[str, Any], vocab: dict[str, Vocabulary]) -> dict[str, Any]:
    plan = bench.plan
    began = time.monotonic()
    await remove_archive(bench)
    before = await table_sizes(bench)
    topic = await create_topic(bench.bootstrap, partitions=1, prefix="bench-console")
    dlq = await create_topic(bench.bootstrap, partitions=1, prefix="bench-console-dlq")
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    print(f"building the bench archive: {plan.total:,} messages on {plan.phone_number_id} under {plan.prefix}/")
    try:
        sent = await prefill(bench, topic, vocab, end)
        prefill_s = time.monotonic() - began
        archived = await run_archiver(bench, topic, dlq, sent)
    finally:
        await delete_topics(bench.bootstrap, [topic, dlq])
    after = await table_sizes(bench)
    events, objects = await indexed_counts(bench)
    if events != plan.total:
        raise RuntimeError(f"{events:,} events indexed of {plan.total:,}: the archive is not complete")
    sizes_began = time.monotonic()
    sizes = await scratch_sizes(bench)
    manifest: dict[str, Any] = {
        "params": params,
        "events": events,
        "objects": objects,
        "heavy_wa_id": plan.heavy_wa_id,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "time_range": [(end - timedelta(days=plan.days)).isoformat(), end.isoformat()],
        "build": {
            "prefill_seconds": round(prefill_s, 1),
            **archived,
            "sizes_seconds": round(time.monotonic() - sizes_began, 1),
            "total_seconds": round(time.monotonic() - began, 1),
        },
        "sizes": sizes,
        # The shared tables as they grew during the build (other runs' writes at the same time included).
        "tables_growth_during_build": {
            "keyword_index_total_bytes": after["keyword_total"] - before["keyword_total"],
            "keyword_index_gin_bytes": after["keyword_gin"] - before["keyword_gin"],
            "archived_events_total_bytes": after["events_total"] - before["events_total"],
            "keyword_rows_added": after["keyword_rows"] - before["keyword_rows"],
            "keyword_bytes_per_message": round((after["keyword_total"] - before["keyword_total"]) / events, 1),
            "archived_events_bytes_per_message": round((after["events_total"] - before["events_total"]) / events, 1),
        },
    }
    await bench.access.bucket.put(plan.manifest_key, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    print(f"built in {manifest['build']['total_seconds']:,} s: {events:,} events in {objects:,} objects", flush=True)
    return manifest


# ---------------------------------------------------------------------------------------------------- measuring
def distribution(values_ms: Sequence[float]) -> dict[str, Any]:
    """n, p50, p95 (nearest rank) and max, in ms."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)], 1),
        "max_ms": round(ordered[-1], 1),
    }


BANDS: Final[dict[str, tuple[float, float]]] = {
    # (low, high) ranks in the language's vocabulary (Vocabulary.band): the head's first words, the middle of the
    # head and the start of the tail, the last third of the tail.
    "frequent": (0, 30),
    "medium": (200, 800),
    "rare": (0.67, 1.0),
}


def search_queries(
    plan: ArchivePlan, vocab: dict[str, Vocabulary], per_cell: int, sample: int = 50_000
) -> dict[str, dict[str, list[str]]]:
    """``per_cell`` queries for each word count and kind of word (BANDS), in French and English as people
    write: one word of the kind; two words of the kind that one archived message holds together (as "code promo":
    a person searches words they remember from one message), found in the archive's first ``sample`` messages."""
    rng = random.Random(f"{plan.seed}-queries")
    bands = {band: {lang: set(v.band(low, high)) for lang, v in vocab.items()} for band, (low, high) in BANDS.items()}
    together: dict[str, list[str]] = {band: [] for band in BANDS}
    for sender, text in itertools.islice(message_texts(plan, vocab), sample):
        language = plan.language_of(sender)
        for band, found in together.items():
            pair = sorted({w for w in text.rstrip(".?! ").split() if w in bands[band][language]})
            if len(pair) >= 2 and len(found) < per_cell * 20:
                found.append(" ".join(rng.sample(pair, 2)))
    queries: dict[str, dict[str, list[str]]] = {"one_word": {}, "two_words": {}}
    for band in BANDS:
        queries["one_word"][band] = [
            rng.choice(sorted(bands[band]["fr" if rng.random() < FRENCH_SHARE else "en"])) for _ in range(per_cell)
        ]
        pairs = together[band]
        queries["two_words"][band] = [rng.choice(pairs) for _ in range(per_cell)] if pairs else []
    return queries


@dataclass
class ConsoleClient:
    """A signed-in browser of the console: its client and the session's CSRF token."""

    client: httpx.AsyncClient
    csrf: str


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', page)
    if not found:
        raise RuntimeError(f"no {name} on the console's page")
    return found.group(1)


@contextlib.asynccontextmanager
async def signed_in(url: str, who: tuple[str, str]) -> AsyncIterator[ConsoleClient]:
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"accept-language": "fr"}) as client:
        page = await client.get("/signin")
        answer = await client.post(
            "/signin",
            data={
                "signin_token": _hidden(page.text, "signin_token"),
                "name": who[0],
                "token": who[1],
                "timezone": "Europe/Paris",
            },
        )
        if answer.status_code != 303:
            raise RuntimeError(f"sign-in refused: {answer.status_code}")
        search = await client.get("/search")
        yield ConsoleClient(client, _hidden(search.text, "csrf"))


async def timed(call: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    started = time.perf_counter()
    count = await call()
    return (time.perf_counter() - started) * 1000, count


async def measure_cells(
    name: str,
    queries: dict[str, dict[str, list[str]]],
    run_one: Callable[[str], Awaitable[int]],
    budget_s: float,
) -> dict[str, Any]:
    """Every cell's queries one after the other (a cell stops at its time budget): latency and hits."""
    figures: dict[str, Any] = {}
    for count_name, cells in queries.items():
        figures[count_name] = {}
        for band, cell in cells.items():
            for query in cell[:3]:  # warm-up, not counted: the first queries pay connections and cold pages
                await run_one(query)
            spent: list[float] = []
            hits: list[int] = []
            deadline = time.monotonic() + budget_s
            for query in cell:
                if time.monotonic() > deadline:
                    break
                ms, found = await timed(partial(run_one, query))
                spent.append(ms)
                hits.append(found)
            figures[count_name][band] = {
                **distribution(spent),
                "hits_median": statistics.median(hits) if hits else None,
                "queries_without_hits": sum(1 for h in hits if h == 0),
                "examples": cell[:3],
            }
            row = figures[count_name][band]
            if not row["n"]:
                continue
            print(
                f"  {name:<8} {count_name:<9} {band:<8} n={row['n']:>3}  p50 {row['p50_ms']:>7.1f}  p95"
                f" {row['p95_ms']:>7.1f}  max {row['max_ms']:>7.1f} ms  hits~{row['hits_median']}",
                flush=True,
            )
    return figures


async def search_actions(bench: Bench, actions: Actions, operator: Operator, query: str) -> int:
    hits = await actions.search(
        operator, SearchFilter(phone_number_id=bench.plan.phone_number_id, keywords=query, limit=SEARCH_LIMIT)
    )
    return len(hits)


async def search_http(bench: Bench, browser: ConsoleClient, query: str) -> int:
    answer = await browser.client.post(
        "/search",
        data={"csrf": browser.csrf, "keywords": query, "phone_number_id": bench.plan.phone_number_id},
    )
    if answer.status_code != 200:
        raise RuntimeError(f"POST /search answered {answer.status_code}")
    return answer.text.count('class="hit"')


async def open_timeline(
    browser: ConsoleClient, subject_ref: str, *, reason: bool = False, keywords: str | None = None
) -> int:
    """One timeline page over HTTP (with the reason form the first time; with ``keywords`` as when a search hit
    is opened); returns the bubbles on it."""
    data = {"csrf": browser.csrf, "subject_ref": subject_ref}
    if reason:
        data["reason"] = REASON
    if keywords:
        data["keywords"] = keywords
    answer = await browser.client.post("/conversation/reason" if reason else "/conversation", data=data)
    if answer.status_code != 200 or 'class="bubble' not in answer.text:
        raise RuntimeError(f"the timeline answered {answer.status_code} without bubbles")
    return answer.text.count('class="bubble ')


async def heavy_ref(bench: Bench) -> str:
    async with bench.access.pool.acquire() as conn:
        refs = await resolve_subject_refs(conn, bench.access.pepper, bench.plan.heavy_wa_id, bench.plan.phone_number_id)
    return refs[0]


async def timeline_steps(bench: Bench, subject_ref: str, page_size: int) -> dict[str, Any]:
    """What a timeline read is made of, one step at a time, in ms: the person's index rows (every one, as the
    page's choice needs them), the GETs alone of the objects holding the newest page and of every object of the
    conversation (the floor of a whole-history read, ``Actions.messages``), and the bubbles of one page."""
    access = bench.access
    started = time.perf_counter()
    async with access.pool.acquire() as conn:
        refs = await expand_subject_refs(conn, [subject_ref])
        rows = await conn.fetch(
            "SELECT event_id, object_key, record_index, subject_ref, kind, type, message_ref, original_message_ref"
            " FROM archived_events WHERE subject_ref = ANY($1::bytea[]) ORDER BY event_time, kafka_offset",
            binary_keys(refs),
        )
    index_ms = (time.perf_counter() - started) * 1000
    limit = asyncio.Semaphore(8)  # as many GETs at once as the reader makes

    async def gets(keys: set[str]) -> tuple[float, int]:
        async def get(key: str) -> int:
            async with limit:
                return len(await access.bucket.get(key))

        started = time.perf_counter()
        sizes = await asyncio.gather(*(get(key) for key in sorted(keys)))
        return (time.perf_counter() - started) * 1000, sum(sizes)

    page_rows = rows[-page_size:]
    page_objects = {r["object_key"] for r in page_rows}
    all_objects = {r["object_key"] for r in rows}
    page_gets_ms, page_bytes = await gets(page_objects)
    all_gets_ms, all_bytes = await gets(all_objects)
    locations = [RecordLocation(r["event_id"].hex(), r["object_key"], r["record_index"]) for r in page_rows]
    started = time.perf_counter()
    opened = await access.reader.open(locations)
    open_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    shown = bubbles(assemble([orjson.loads(v) for v in opened.values() if v is not None], {}))
    bubbles_ms = (time.perf_counter() - started) * 1000
    return {
        "records": len(rows),
        "index_rows_ms": round(index_ms, 1),
        "page_objects": len(page_objects),
        "page_object_bytes": page_bytes,
        "page_gets_alone_ms": round(page_gets_ms, 1),
        "page_reader_open_ms": round(open_ms, 1),
        "page_assemble_and_bubbles_ms": round(bubbles_ms, 1),
        "page_bubbles": len(shown),
        "conversation_objects": len(all_objects),
        "conversation_object_bytes": all_bytes,
        "conversation_gets_alone_ms": round(all_gets_ms, 1),
    }


def profile_text(profiler: cProfile.Profile, lines: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    return out.getvalue()


async def profiles(bench: Bench, subject_ref: str, query: str) -> dict[str, str]:
    """cProfile (the event loop's thread: the S3 GETs run in threads of their own and show as waits) of one
    timeline request and one search request, the console in this process."""
    settings = pipeline.retention_settings(bench.env, bench.plan.prefix)

    async def opener() -> ArchiveAccess:
        return await open_access(settings)

    app = create_console_app(
        ConsoleSettings(secure_cookies=False), settings, opener, registry=CollectorRegistry(), serve_ops=False
    )
    found: dict[str, str] = {}
    async with serve_asgi(app) as url, signed_in(url, ("test-reader", pipeline.READER_TOKEN)) as browser:
        await open_timeline(browser, subject_ref, reason=True)
        await search_http(bench, browser, query)
        calls: dict[str, Callable[[], Awaitable[int]]] = {
            "timeline": partial(open_timeline, browser, subject_ref),
            "search": partial(search_http, bench, browser, query),
        }
        for name, call in calls.items():
            profiler = cProfile.Profile()
            profiler.enable()
            started = time.perf_counter()
            await call()
            wall = (time.perf_counter() - started) * 1000
            profiler.disable()
            text = f"one {name} request, {wall:.0f} ms wall\n" + profile_text(profiler)
            print(f"--- profile: {text}", flush=True)
            found[name] = text
    return found


class _RecordingConnection:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.calls.append((sql, args))
        return []


class _RecordingPool:
    """Stands for the pool in search_index: records the statement it would send, so its plan is the real one."""

    def __init__(self) -> None:
        self.conn = _RecordingConnection()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_RecordingConnection]:
        yield self.conn


def _literal(value: object) -> str:
    """A bind value of search_index's statement as SQL (text, integers, arrays of them), for EXPLAIN EXECUTE."""
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(int(value))  # type: ignore[call-overload]


def _sql_type(value: object) -> str:
    if isinstance(value, list):
        return ("bigint" if value and isinstance(value[0], int) else "text") + "[]"
    return "text" if isinstance(value, str) else "bigint"


async def explain_searches(bench: Bench, queries: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """The plans of the first query of each cell, as search_index sends it: the custom plan PostgreSQL makes for
    these values, and the generic plan it may switch to once the statement has run five times on a connection
    (asyncpg prepares and caches every statement; plan_cache_mode is ``auto``)."""
    plans: dict[str, list[str]] = {}
    for count_name, cells in queries.items():
        for band, cell in cells.items():
            if not cell:
                continue
            recorder = _RecordingPool()
            query = SearchFilter(phone_number_id=bench.plan.phone_number_id, keywords=cell[0], limit=SEARCH_LIMIT)
            await search_index(recorder, bench.access.pepper, query)  # type: ignore[arg-type]
            sql, args = recorder.conn.calls[0]
            async with bench.access.pool.acquire() as conn:
                custom = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
                name = f"bench_search_{uuid.uuid4().hex[:8]}"
                await conn.execute(f"PREPARE {name} ({', '.join(_sql_type(a) for a in args)}) AS {sql}")
                try:
                    async with conn.transaction():
                        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                        generic = await conn.fetch(
                            f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name} ({', '.join(_literal(a) for a in args)})"
                        )
                finally:
                    await conn.execute(f"DEALLOCATE {name}")
            for kind, rows in (("custom", custom), ("generic", generic)):
                plan = [r[0] for r in rows]
                plans[f"{count_name}/{band}/{kind}: {cell[0]}"] = plan
                print(f"--- {kind} plan, {count_name} {band} ({cell[0]!r})\n" + "\n".join(plan), flush=True)
    return plans


@contextlib.contextmanager
def console_process(bench: Bench) -> Iterator[str]:
    """``python -m services.console`` over the bench's archive, signing in the bench's reader; yields its URL."""
    port, ops_port = free_port(), free_port()
    env = {
        **bench.env,
        "WA_RETENTION_S3__PREFIX": bench.plan.prefix,
        "WA_RETENTION_ADMIN_TOKENS": orjson.dumps(
            {BENCH_READER[0]: {"token": BENCH_READER[1], "role": "reader"}}
        ).decode(),
        "WA_CONSOLE_PORT": str(port),
        "WA_CONSOLE_OPS_PORT": str(ops_port),
        "WA_CONSOLE_SECURE_COOKIES": "false",
        "WA_CONSOLE_LOG_LEVEL": "WARNING",
    }
    log = Path("/tmp") / f"bench-console-{port}.log"
    process = start_module("services.console", env, log)
    try:
        wait_http(f"http://127.0.0.1:{ops_port}/readyz")  # the probes are on the ops port, not the pages'
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)


async def timeline_runs(runs: int, budget_s: float, calls: dict[str, Callable[[], Awaitable[int]]]) -> dict[str, Any]:
    """``runs`` rounds of every call, alternately (a noisy minute does not land on one of them only), bounded by
    ``budget_s``; per call its distribution, the runs and what the last returned."""
    spent: dict[str, list[float]] = {name: [] for name in calls}
    last: dict[str, int] = {}
    deadline = time.monotonic() + budget_s
    for _ in range(runs):
        if time.monotonic() > deadline:
            break
        for name, call in calls.items():
            ms, last[name] = await timed(call)
            spent[name].append(ms)
    return {
        name: {**distribution(values), "runs_ms": [round(v) for v in values], "count": last.get(name)}
        for name, values in spent.items()
    }


async def measure(
    bench: Bench,
    vocab: dict[str, Vocabulary],
    *,
    per_cell: int,
    budget_s: float,
    runs: int,
    profile: bool,
    explain: bool,
    custom_plans: bool,
) -> dict[str, Any]:
    queries = search_queries(bench.plan, vocab, per_cell)
    actions = Actions(bench.access, RetentionMetrics(CollectorRegistry()))
    operator = Operator("bench-console", "reader")
    subject_ref = await heavy_ref(bench)
    page_size = ConsoleSettings().page_size
    figures: dict[str, Any] = {"search": {}}

    async def page_read() -> int:
        found = await actions.conversation_page(operator, subject_ref=subject_ref, reason=REASON, page_size=page_size)
        return len(found.messages)

    async def whole_read() -> int:
        return len((await actions.messages(operator, subject_ref=subject_ref, reason=REASON)).messages)

    print("keyword search, ms:", flush=True)
    figures["search"]["actions"] = await measure_cells(
        "actions", queries, partial(search_actions, bench, actions, operator), budget_s
    )
    if custom_plans:
        # What if PostgreSQL always planned the search for its values: asyncpg prepares every statement and, with
        # plan_cache_mode = auto, a connection may switch to the generic plan after five runs (see --explain).
        dsn = bench.env["WA_RETENTION_PG__DSN"]
        forced = f"{dsn}{'&' if '?' in dsn else '?'}plan_cache_mode=force_custom_plan"
        access = await open_access(
            pipeline.retention_settings({**bench.env, "WA_RETENTION_PG__DSN": forced}, bench.plan.prefix)
        )
        try:
            custom = Actions(access, RetentionMetrics(CollectorRegistry()))
            figures["search"]["actions_custom_plans"] = await measure_cells(
                "custom", queries, partial(search_actions, bench, custom, operator), budget_s
            )
        finally:
            await access.close()
    # Opening one of the heavy person's search hits: the first medium word and the most frequent word of their
    # language (its candidates are most of the conversation), whose candidates the page decrypts to mark them.
    language = vocab[bench.plan.language_of(-1)]
    from_hit = {band: language.band(*BANDS[band])[0] for band in ("medium", "frequent")}
    with console_process(bench) as url:
        async with signed_in(url, BENCH_READER) as browser:
            figures["search"]["http"] = await measure_cells(
                "http", queries, partial(search_http, bench, browser), budget_s
            )
            print(f"timeline of {bench.plan.heavy:,} messages, ms:", flush=True)
            first_ms, _shown = await timed(partial(open_timeline, browser, subject_ref, reason=True))
            timeline = await timeline_runs(
                runs,
                budget_s * 2,
                {
                    "http_first_page": partial(open_timeline, browser, subject_ref),
                    "actions_conversation_page": page_read,
                    "actions_messages": whole_read,
                },
            )
            opened_from_hit = await timeline_runs(
                max(3, runs // 3),
                budget_s,
                {
                    f"http_from_hit_{band}": partial(open_timeline, browser, subject_ref, keywords=word)
                    for band, word in from_hit.items()
                },
            )
    figures["timeline"] = {
        "page_size": page_size,
        "http_with_reason_first_ms": round(first_ms, 1),
        **timeline,
        **opened_from_hit,
        "from_hit_keywords": from_hit,
        "steps": [await timeline_steps(bench, subject_ref, page_size) for _ in range(3)],
    }
    for name, row in figures["timeline"].items():
        if isinstance(row, dict) and "p95_ms" in row:
            print(
                f"  {name:<27} n={row['n']:>2}  p50 {row['p50_ms']:>7.0f}  p95 {row['p95_ms']:>7.0f}"
                f"  max {row['max_ms']:>7.0f}  ({row['count']} messages)",
                flush=True,
            )
    print(f"  steps (3 reads): {figures['timeline']['steps']}", flush=True)
    if profile:
        figures["profiles"] = await profiles(bench, subject_ref, queries["one_word"]["frequent"][0])
    if explain:
        figures["plans"] = await explain_searches(bench, queries)
    return figures


async def current_sizes(bench: Bench) -> dict[str, Any]:
    """Cheap and exact, every run: the bench's keyword rows and their token arrays' bytes."""
    async with bench.access.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS rows, sum(pg_column_size(tokens)) AS token_bytes,"
            " sum(pg_column_size(k.*)) AS row_bytes FROM keyword_index k WHERE object_key LIKE $1",
            bench.like,
        )
    assert row is not None
    return {name: int(value or 0) for name, value in dict(row).items()}


# The readers the benchmark reads as (in process, through the console's process, through the console's app):
# readers read the custodians of the open cases assigned to them (services/governance/scope.py), so the bench's
# business number is a case of theirs, as a reviewer's would be.
BENCH_READERS: Final = ("bench-console", BENCH_READER[0], "test-reader")


async def assign_the_bench_number(bench: Bench) -> None:
    """One open case of the bench's business number, assigned to every bench reader (a second run finds it)."""
    ref = f"BENCH-{bench.plan.phone_number_id}"
    async with bench.access.pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM cases WHERE case_ref = $1", ref)
    if status == "open":
        return
    if status is not None:  # closed since (by hand): a new one
        ref = f"{ref}-{secrets.token_hex(3)}"
    await Actions(bench.access, RetentionMetrics(CollectorRegistry())).open_case(
        Operator("bench-dpo", "dpo"),
        title="the console benchmark's business number",
        custodians=[CustodianSpec(kind="phone_number", phone_number_id=bench.plan.phone_number_id)],
        reviewers=list(BENCH_READERS),
        case_ref=ref,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = demo_env()
    plan = ArchivePlan(args.messages, args.people, args.heavy, args.days, args.seed)
    vocab = vocabularies(plan.seed)
    params = plan_params(plan, vocab)
    access = await open_access(pipeline.retention_settings(env, plan.prefix))
    bench = Bench(env, plan, access)
    try:
        manifest, why = (None, "--rebuild") if args.rebuild else await reusable(bench, params)
        print(f"bench archive {plan.prefix}/ on {plan.phone_number_id}: {why}", flush=True)
        built_now = manifest is None
        if manifest is None:
            manifest = await build(bench, params, vocab)
        await assign_the_bench_number(bench)
        measured = await measure(
            bench,
            vocab,
            per_cell=args.queries,
            budget_s=args.budget_s,
            runs=args.runs,
            profile=args.profile,
            explain=args.explain,
            custom_plans=args.custom_plans,
        )
        keyword_now = await current_sizes(bench)
    finally:
        await access.close()
    events = manifest["events"]
    return {
        "archive": {
            "messages": events,
            "people": plan.people + 1,
            "heavy_person_messages": plan.heavy,
            "objects": manifest["objects"],
            "days": plan.days,
            "vocabulary_words": {lang: len(v.words) for lang, v in vocab.items()},
            "built_now": built_now,
            "built_at": manifest["built_at"],
            "build": manifest["build"],
        },
        **measured,
        "index_growth": {
            **manifest["sizes"],
            "keyword_row_bytes_per_message_now": round(keyword_now["row_bytes"] / events, 1),
            "keyword_token_array_bytes_per_message_now": round(keyword_now["token_bytes"] / events, 1),
            "tables_growth_during_build": manifest["tables_growth_during_build"],
        },
        "targets": {"search_p95_ms": SEARCH_TARGET_MS, "timeline_first_page_ms": TIMELINE_TARGET_MS},
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def summary(figures: dict[str, Any]) -> str:
    archive = figures["archive"]
    lines = [
        f"archive: {archive['messages']:,} messages, {archive['people']:,} people, {archive['objects']:,} objects, "
        f"{'built now' if archive['built_now'] else 'reused'} (build {archive['build']['total_seconds']:,} s)",
        f"keyword search, ms (target p95 <= {SEARCH_TARGET_MS})       n     p50     p95     max   hits",
    ]
    layers = (("actions", "Actions.search"), ("http", "POST /search"), ("actions_custom_plans", "custom plans"))
    for layer, label in layers:
        for count_name, cells in figures["search"].get(layer, {}).items():
            for band, c in cells.items():
                if not c["n"]:
                    continue
                lines.append(
                    f"  {label:<15} {count_name:<9} {band:<8} {c['n']:>5} {c['p50_ms']:>7.1f} {c['p95_ms']:>7.1f}"
                    f" {c['max_ms']:>7.1f} {c['hits_median']!s:>6}  {verdict(c['p95_ms'], SEARCH_TARGET_MS)}"
                )
    timeline = figures["timeline"]
    steps = timeline["steps"][-1]
    lines.append(
        f"timeline of {steps['records']:,} messages, ms (target: first page <= {TIMELINE_TARGET_MS})"
        "        n     p50     p95     max"
    )
    for name, label in (
        ("http_first_page", "POST /conversation, newest page"),
        ("actions_conversation_page", "Actions.conversation_page"),
        ("actions_messages", "Actions.messages (every message)"),
        ("http_from_hit_medium", "POST /conversation, medium keyword"),
        ("http_from_hit_frequent", "POST /conversation, frequent keyword"),
    ):
        t = timeline[name]
        lines.append(
            f"  {label:<42} {t['n']:>5} {t['p50_ms']:>7.0f} {t['p95_ms']:>7.0f} {t['max_ms']:>7.0f}"
            + (f"  {verdict(t['p95_ms'], TIMELINE_TARGET_MS)}" if name == "http_first_page" else "")
        )
    lines += [
        f"  steps: index rows {steps['index_rows_ms']:.0f}; the page: GETs alone of {steps['page_objects']} objects"
        f" ({steps['page_object_bytes'] / 1e6:,.1f} MB) {steps['page_gets_alone_ms']:.0f}, reader.open"
        f" {steps['page_reader_open_ms']:.0f}, assemble + bubbles {steps['page_assemble_and_bubbles_ms']:.0f};",
        f"  every message: GETs alone of {steps['conversation_objects']} objects"
        f" ({steps['conversation_object_bytes'] / 1e6:,.0f} MB) {steps['conversation_gets_alone_ms']:.0f}",
    ]
    growth = figures["index_growth"]
    lines += [
        "index growth per message (scratch copy, as grown object by object):",
        f"  keyword_index {growth['keyword_bytes_per_message']:,} bytes"
        f" (GIN {growth['keyword_gin_bytes_per_message']:,}) — {growth['keyword_rows_per_message']} rows per"
        f" message, {growth['tokens_per_row']} tokens per row",
        f"  archived_events {growth['archived_events_bytes_per_message']:,} bytes"
        f" — keyword_index is {growth['keyword_share_of_events_bytes']:.0%} of it",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages of the crowd")
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--heavy", type=int, default=10_000, help="messages of the one long conversation")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--queries", type=int, default=100, help="queries per word count and kind of word")
    parser.add_argument("--budget-s", type=float, default=90, help="at most this long per cell of queries")
    parser.add_argument("--runs", type=int, default=12, help="timeline reads per layer (at least 10)")
    parser.add_argument("--rebuild", action="store_true", help="build the archive even if one is there")
    parser.add_argument("--profile", action="store_true", help="cProfile one timeline and one search request")
    parser.add_argument("--explain", action="store_true", help="the plans of one search of each kind")
    parser.add_argument(
        "--custom-plans",
        action="store_true",
        help="also search through the action layer with plan_cache_mode = force_custom_plan (a what-if)",
    )
    args = parser.parse_args()
    if args.heavy < 1 or args.messages < 1 or args.runs < 1 or args.queries < 4:
        parser.error("--messages, --heavy and --runs must be positive, --queries at least 4")
    ensure_stack()
    figures = asyncio.run(run(args))
    write_result("console", figures)
    print(summary(figures))


if __name__ == "__main__":
    main()
