-- Messages held before sending (the send gateway's `send_held` events, services/actions/held_sends.py): the
-- archiver opens a four-eyes request of kind `send` for each, once, and a decision record goes to the gateway when
-- the request is approved, rejected or expires. Only added columns, an index and grants.
-- `source_ref`: what makes a request the one it is when it comes from a record consumed at least once (a held
-- send's id): a replay of the event opens nothing new. NULL for the requests operators make.
-- `published_at`: when the decision record of the request was acknowledged by Kafka (acks=all). Set in the same
-- transaction as the decision (approved, rejected), or by the expiry sweep for a request whose expiry came: a request
-- with it set is never published again, across restarts.
ALTER TABLE approval_requests ADD COLUMN source_ref text;
ALTER TABLE approval_requests ADD COLUMN published_at timestamptz;
CREATE UNIQUE INDEX approval_requests_source ON approval_requests (kind, source_ref) WHERE source_ref IS NOT NULL;
-- The expiry sweep: held sends still pending whose decision record was not published yet.
CREATE INDEX approval_requests_unpublished ON approval_requests (expires_at)
    WHERE status = 'pending' AND source_ref IS NOT NULL AND published_at IS NULL;

-- The archiver opens the request of a held send in the transaction that indexes the event, and audits it.
GRANT SELECT, INSERT ON approval_requests TO wa_archiver;
GRANT INSERT ON audit_log TO wa_archiver;
GRANT USAGE ON SEQUENCE audit_log_audit_id_seq TO wa_archiver;
