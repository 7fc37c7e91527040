-- The review console's sign-in sessions (services/console/sessions.py). The browser holds a random session id in
-- an HttpOnly, SameSite=Strict cookie; the database holds only its SHA-256, so a read of this table does not give
-- a usable session. Kept in PostgreSQL, not in a process, so that console replicas need no sticky sessions and a
-- restart signs nobody out. `reasons`: per conversation opened in the session, the reason given (the audit log has
-- it too) and the pseudonyms it covers; pseudonyms only, never a contact's number or name.
CREATE TABLE console_sessions (
    session_hash  bytea PRIMARY KEY,
    actor         text NOT NULL,
    role          text NOT NULL CHECK (role IN ('reader', 'dpo')),
    csrf_token    text NOT NULL,
    locale        text NOT NULL,
    timezone      text NOT NULL,
    reasons       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen_at);
