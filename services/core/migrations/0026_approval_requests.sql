-- Four eyes (services/governance/approvals.py, services/actions/approvals.py): what cannot be undone (an erasure,
-- a hold's release, a case's closing, a case's export, a large export) is requested by one operator and carried
-- out when another, with the role the request's kind names, approves it before it expires.
-- No personal data in clear:
-- - `target` holds what the kind's execution needs, as references only: pseudonyms, a hold's id, a case's
--   reference, a business number, counts (never a phone number or a text a person wrote);
-- - the reasons (the request's, the decision's) may quote a person: sealed under the DEK of the person the request
--   names (subject_ref, dek_id: an erasure of the person destroys that key), else (no person, or a person without a
--   key) under the request's own key wrapped by the KEK (kek_id, wrapped_key) and bound to the request's id.
-- `kind` is not a CHECK: the kinds are an open registry in the code (a kind added needs no migration).
-- An expired request is a pending one past expires_at: nothing writes `expired`, so nobody can miss the moment.
CREATE TABLE approval_requests (
    request_id       uuid PRIMARY KEY,
    kind             text NOT NULL,
    target           jsonb NOT NULL,
    subject_ref      text,
    dek_id           uuid,
    kek_id           text,
    wrapped_key      bytea,
    sealed_reason    bytea NOT NULL,
    requested_by     text NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'approved', 'rejected', 'failed')),
    decided_by       text,
    decided_at       timestamptz,
    sealed_decision  bytea,
    -- what the execution returned (references and counts), or the refusal that stopped it (`failed`)
    outcome          jsonb,
    CHECK (dek_id IS NULL OR subject_ref IS NOT NULL),
    CHECK ((dek_id IS NULL) <> (wrapped_key IS NULL)),
    CHECK (decided_by IS NULL OR decided_by <> requested_by)
);
-- What waits (the console's count in every page's header, the pending gauge) and an operator's own requests.
CREATE INDEX approval_requests_pending ON approval_requests (expires_at) WHERE status = 'pending';
CREATE INDEX approval_requests_requester ON approval_requests (requested_by, requested_at DESC);

-- Retention (the admin API and the CLI) and the console request, list, approve and reject. Nobody deletes one.
GRANT SELECT, INSERT, UPDATE ON approval_requests TO wa_retention, wa_console;
