-- Erasure is final (docs/GDPR.md): every pseudonym of an erased person, with the moment the erasure took effect.
-- The archiver drops, instead of sealing again, every record of theirs whose event time (or receipt time, when
-- Meta sent none) is before it: from an in-flight batch, a replay of the topic, a Meta redelivery. It lives beside
-- the suppression list (shredded_keys), so a restore of the keys table cannot undo it either.
CREATE TABLE erased_subjects (
    subject_ref  text PRIMARY KEY,
    erased_at    timestamptz NOT NULL,
    request_ref  text
);

-- One tombstone per record dropped for that reason: which event and whose, never what it said.
CREATE TABLE erased_events (
    event_id     text PRIMARY KEY,
    subject_ref  text NOT NULL,
    dropped_at   timestamptz NOT NULL DEFAULT now()
);

-- Erasures done before this migration: their destroyed keys say who and when.
INSERT INTO erased_subjects (subject_ref, erased_at, request_ref)
SELECT DISTINCT ON (subject_ref) subject_ref, shredded_at, request_ref
FROM shredded_keys ORDER BY subject_ref, shredded_at DESC
ON CONFLICT (subject_ref) DO NOTHING;
