-- Console sessions opened through an OpenID Connect provider (services/console/oidc.py). Only added columns: a
-- session opened with a named token (the local demo) leaves them empty.
-- `provider_sid`, `provider_sub`: SHA-256 of the provider's session id and subject (with the issuer), so that a
-- back-channel logout finds the sessions it ends, and a copy of the table names no provider account.
-- `sealed`: the refresh token, the ID token (for RP-initiated logout) and the person's display name, sealed with
-- AES-256-GCM under a key derived from the session id, which only the browser's cookie holds: the database never
-- has them in clear, nor the key to open them.
-- `acr`: the authentication context of the last sign-in or step-up; `roles_read_at`: when the roles were last read
-- from the provider (at sign-in, then by refresh every WA_CONSOLE_OIDC__ROLES_REREAD_S).
ALTER TABLE console_sessions ADD COLUMN provider_sid bytea;
ALTER TABLE console_sessions ADD COLUMN provider_sub bytea;
ALTER TABLE console_sessions ADD COLUMN sealed bytea;
ALTER TABLE console_sessions ADD COLUMN acr text;
ALTER TABLE console_sessions ADD COLUMN roles_read_at timestamptz;
CREATE INDEX console_sessions_provider_sid ON console_sessions (provider_sid) WHERE provider_sid IS NOT NULL;
CREATE INDEX console_sessions_provider_sub ON console_sessions (provider_sub) WHERE provider_sub IS NOT NULL;
