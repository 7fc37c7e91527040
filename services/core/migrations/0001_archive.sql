-- The archive's index and key store. Only pseudonyms are stored: subject_ref / alias_ref / message_ref are
-- HMAC-SHA256(pepper, …) of the person's ids and of wamids (wamids embed the customer's phone number).

-- One wrapped data-encryption key (DEK) per subject; deleting the row is crypto-shredding.
CREATE TABLE subject_keys (
    subject_ref  text PRIMARY KEY,
    dek_id       uuid NOT NULL UNIQUE,
    kek_id       text NOT NULL,
    wrapped_dek  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Suppression list: DEKs that were destroyed. A restored backup of subject_keys cannot bring them back:
-- the keyring refuses (and deletes) any key whose dek_id is listed here.
CREATE TABLE shredded_keys (
    dek_id       uuid PRIMARY KEY,
    subject_ref  text NOT NULL,
    shredded_at  timestamptz NOT NULL DEFAULT now(),
    request_ref  text
);
CREATE INDEX shredded_keys_subject ON shredded_keys (subject_ref);

-- Every identifier seen for a person (wa_id, business-scoped user_id) maps to the subject_ref whose key
-- sealed their records, so retrieval, export and erasure by either identifier reach all their data.
CREATE TABLE subject_aliases (
    alias_ref    text NOT NULL,
    subject_ref  text NOT NULL,
    PRIMARY KEY (alias_ref, subject_ref)
);
CREATE INDEX subject_aliases_subject ON subject_aliases (subject_ref);

-- One row per batch object written to the bucket.
CREATE TABLE archive_objects (
    object_key    text PRIMARY KEY,
    topic         text NOT NULL,
    kafka_partition integer NOT NULL,
    first_offset  bigint NOT NULL,
    last_offset   bigint NOT NULL,
    record_count  integer NOT NULL,
    size_bytes    bigint NOT NULL,
    retain_until  timestamptz,
    written_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per archived event (exactly once: event_id is the key; a replay points it at the newest object).
CREATE TABLE archived_events (
    event_id              text PRIMARY KEY,
    subject_ref           text,
    dek_id                uuid,
    waba_id               text,
    phone_number_id       text,
    kind                  text NOT NULL,
    type                  text,
    message_ref           text,
    original_message_ref  text,
    event_time            timestamptz,
    received_at           timestamptz NOT NULL,
    object_key            text NOT NULL,
    record_index          integer NOT NULL,
    kafka_partition       integer NOT NULL,
    kafka_offset          bigint NOT NULL,
    retention_class       text NOT NULL DEFAULT 'default',
    expires_at            timestamptz
);
CREATE INDEX archived_events_subject_time ON archived_events (subject_ref, event_time);
CREATE INDEX archived_events_message ON archived_events (message_ref);
CREATE INDEX archived_events_original ON archived_events (original_message_ref) WHERE original_message_ref IS NOT NULL;
CREATE INDEX archived_events_object ON archived_events (object_key);
CREATE INDEX archived_events_expiry ON archived_events (expires_at);
CREATE INDEX archived_events_phone_time ON archived_events (phone_number_id, event_time);

-- Media downloaded through the Graph API, archived encrypted in an object of its own.
CREATE TABLE archived_media (
    event_id      text PRIMARY KEY,
    subject_ref   text,
    status        text NOT NULL CHECK (status IN ('archived', 'missing')),
    object_key    text,
    mime_type     text,
    size_bytes    bigint,
    attempts      integer NOT NULL,
    failure       text,
    archived_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX archived_media_subject ON archived_media (subject_ref);

-- The business phone numbers seen (a handful per company): lets erasure and holds compute a person's
-- pseudonym under every number without scanning the index.
CREATE TABLE business_numbers (
    phone_number_id  text PRIMARY KEY,
    waba_id          text,
    first_seen       timestamptz NOT NULL DEFAULT now()
);
