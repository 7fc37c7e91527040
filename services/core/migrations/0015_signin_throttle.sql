-- Console sign-in that holds (services/console/throttle.py, sessions.py).
--
-- console_signin_throttle: sign-in attempts per account name and per client address, so that guessing is bounded
-- across every console replica and a lockout holds on all of them. `key` is an HMAC (keyed with the pepper) of
-- "name:<name>" or "address:<ip>": neither a name nor an address is stored in clear. An attempt is counted before
-- its credentials are checked (so parallel guesses are counted too) and a successful sign-in takes its own back.
CREATE TABLE console_signin_throttle (
    key                bytea PRIMARY KEY,
    attempts           integer NOT NULL,
    window_started_at  timestamptz NOT NULL,
    locked_until       timestamptz
);
CREATE INDEX console_signin_throttle_window ON console_signin_throttle (window_started_at);

-- A session remembers which credential opened it (SHA-256 of name and token; the token has 128 bits or more, so
-- the digest does not give it away): each request checks that the credential is still configured with the same
-- role, so revoking or downgrading a token ends its sessions. Sessions from before this migration have none and
-- end at their next request.
ALTER TABLE console_sessions ADD COLUMN credential bytea NOT NULL DEFAULT ''::bytea;
CREATE INDEX console_sessions_created ON console_sessions (created_at);

-- The console's database role, where it exists already (it is created by a later migration on a new database,
-- which grants this table too).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wa_console') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON console_signin_throttle TO wa_console;
    END IF;
END
$$;
