-- Cases (services/governance/cases.py): a dispute's custodians, its legal holds, the reviewers assigned to it, its
-- saved searches, and the review tags and notes on its messages. No text a person wrote is stored in clear:
-- - the title, the incident record and the saved searches' words are sealed under the case's own key (wrapped by
--   the KEK and bound to the case id, like a subject key is bound to its subject);
-- - a note is sealed under the DEK of the person the noted message belongs to (subject_ref, dek_id): erasing the
--   person destroys that key, and the erasure deletes the note rows too.
-- The reference, the period, the tags (a closed shape: lowercase words), the business numbers and the
-- pseudonyms are not personal data in clear.
CREATE TABLE cases (
    case_id          uuid PRIMARY KEY,
    case_ref         text NOT NULL UNIQUE,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    period_start     timestamptz,
    period_end       timestamptz,
    with_holds       boolean NOT NULL,
    kek_id           text NOT NULL,
    wrapped_key      bytea NOT NULL,
    sealed_title     bytea NOT NULL,
    sealed_incident  bytea,
    opened_by        text NOT NULL,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    closed_by        text,
    closed_at        timestamptz,
    CHECK (period_start IS NULL OR period_end IS NULL OR period_start <= period_end)
);

CREATE TABLE case_custodians (
    custodian_id     uuid PRIMARY KEY,
    case_id          uuid NOT NULL REFERENCES cases (case_id),
    kind             text NOT NULL CHECK (kind IN ('phone_number', 'person', 'group')),
    phone_number_id  text,
    subject_refs     text[] NOT NULL DEFAULT '{}',
    group_ref        bytea,
    -- the hold this custodian's data is under while the case is open (cases opened with holds)
    hold_id          uuid REFERENCES legal_holds (hold_id),
    added_by         text NOT NULL,
    added_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_custodians_case ON case_custodians (case_id);

CREATE TABLE case_reviewers (
    case_id          uuid NOT NULL REFERENCES cases (case_id),
    reviewer         text NOT NULL,
    assigned_by      text NOT NULL,
    assigned_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, reviewer)
);

CREATE TABLE case_searches (
    search_id        uuid PRIMARY KEY,
    case_id          uuid NOT NULL REFERENCES cases (case_id),
    custodian_id     uuid REFERENCES case_custodians (custodian_id),
    sealed_keywords  bytea NOT NULL,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_searches_case ON case_searches (case_id);

CREATE TABLE case_tags (
    case_id          uuid NOT NULL REFERENCES cases (case_id),
    event_id         text NOT NULL,
    tag              text NOT NULL,
    tagged_by        text NOT NULL,
    tagged_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, event_id, tag)
);

CREATE TABLE case_notes (
    note_id          uuid PRIMARY KEY,
    case_id          uuid NOT NULL REFERENCES cases (case_id),
    event_id         text NOT NULL,
    subject_ref      text NOT NULL,
    dek_id           uuid NOT NULL,
    sealed_note      bytea NOT NULL,
    written_by       text NOT NULL,
    written_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_notes_case ON case_notes (case_id, written_at);
CREATE INDEX case_notes_subject ON case_notes (subject_ref);

-- retention and the CLI, and the console (its DPO and reviewers act on cases; an erasure from either deletes the
-- person's notes in the transaction that destroys their keys).
GRANT SELECT, INSERT, UPDATE ON cases, case_custodians TO wa_retention, wa_console;
GRANT SELECT, INSERT ON case_reviewers, case_searches, case_tags TO wa_retention, wa_console;
GRANT SELECT, INSERT, DELETE ON case_notes TO wa_retention, wa_console;
