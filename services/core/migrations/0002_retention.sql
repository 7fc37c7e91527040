-- Legal holds, erasure requests, the audit log and retention runs. Pseudonyms only, never a phone number.

CREATE TABLE legal_holds (
    hold_id          uuid PRIMARY KEY,
    case_ref         text NOT NULL,
    scope            text NOT NULL CHECK (scope IN ('waba', 'phone_number', 'contact', 'conversation')),
    waba_id          text,
    phone_number_id  text,
    -- contact / conversation holds: every pseudonym of the person (one per business phone number)
    subject_refs     text[] NOT NULL DEFAULT '{}',
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    released_by      text,
    released_at      timestamptz
);
CREATE INDEX legal_holds_active ON legal_holds (scope) WHERE released_at IS NULL;

CREATE TABLE erasure_requests (
    request_ref      text PRIMARY KEY,
    subject_refs     text[] NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- GDPR Art. 12(3): one month, extendable; the metric and alert watch this date
    deadline_at      timestamptz NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'blocked', 'completed')),
    blocked_by       text[] NOT NULL DEFAULT '{}',
    completed_at     timestamptz,
    proof            jsonb
);
CREATE INDEX erasure_requests_open ON erasure_requests (received_at) WHERE status <> 'completed';

-- Append-only audit trail (Art. 30 / 32): who decrypted or changed what, when and why. No personal data.
CREATE TABLE audit_log (
    audit_id      bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,
    action        text NOT NULL,
    reason        text,
    subject_ref   text,
    record_count  integer,
    details       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject ON audit_log (subject_ref, at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();

CREATE TABLE retention_runs (
    run_id           uuid PRIMARY KEY,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    dry_run          boolean NOT NULL,
    status           text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    objects_deleted  integer NOT NULL DEFAULT 0,
    objects_locked   integer NOT NULL DEFAULT 0,
    events_deleted   integer NOT NULL DEFAULT 0,
    error            text
);
