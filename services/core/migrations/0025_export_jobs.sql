-- Export jobs (services/evidence/jobs.py): an export asked for in the console or queued by the CLI runs in the
-- retention service's background, one at a time, writes its files to the work bucket under exports/<job_id>/ and
-- hands them over through short-lived links until expires_at; then they are deleted and the job is `expired`.
-- The person is named by pseudonym only (subject_ref); `error` holds fixed words, never personal data; `output`
-- lists the files' names, sizes and SHA-256. The reason is the one the audit log keeps with `export.requested`.
CREATE TABLE export_jobs (
    job_id       uuid PRIMARY KEY,
    scope        text NOT NULL CHECK (scope IN ('conversation', 'subject_access', 'search', 'case')),
    subject_ref  text,
    since        timestamptz,
    until        timestamptz,
    formats      text[] NOT NULL,
    language     text NOT NULL DEFAULT 'en',
    requested_by text NOT NULL,
    reason       text NOT NULL,
    request_ref  text,
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'done', 'failed', 'expired')),
    step         text NOT NULL DEFAULT 'queued',
    done         integer NOT NULL DEFAULT 0 CHECK (done >= 0),
    total        integer NOT NULL DEFAULT 0 CHECK (total >= 0),
    error        text,
    attempts     integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    heartbeat_at timestamptz,
    finished_at  timestamptz,
    expires_at   timestamptz,
    output       jsonb NOT NULL DEFAULT '[]'
);
-- The worker's queue (queued jobs, and running ones whose worker may have died) and its expiry sweep.
CREATE INDEX export_jobs_open ON export_jobs (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX export_jobs_expiring ON export_jobs (expires_at) WHERE status = 'done';
-- An operator's recent jobs (the console's list).
CREATE INDEX export_jobs_requester ON export_jobs (requested_by, created_at DESC);

-- Retention runs the jobs (and the CLI queues and lists them); the console queues them and shows their progress.
-- Nobody deletes a job: an expired one stays, as the record of what was handed over.
GRANT SELECT, INSERT, UPDATE ON export_jobs TO wa_retention;
GRANT SELECT, INSERT ON export_jobs TO wa_console;
