-- The hash chain of archived objects (services/evidence/chain.py). The chain itself is in the bucket; this is the
-- head of each stream (sequence number and SHA-256 of its last entry), so that an append reads no object, and a
-- row to lock, so that two writers never append to one stream at once. After a restore of the database,
-- `wa-archive recover` sets the heads from the bucket again. Hashes and stream names only: no personal data.
CREATE TABLE IF NOT EXISTS chain_heads (
    prefix      text NOT NULL,
    stream      text NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= -1),
    hash        bytea NOT NULL CHECK (length(hash) = 32),
    appended_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (prefix, stream)
);

-- Each `wa-archive verify` run and what it found (services/evidence/verify.py): the retention service's gauges
-- (wa_archive_verify_*) read the last one, and the alert fires on its findings. Counts only.
CREATE TABLE IF NOT EXISTS verify_runs (
    run_id       uuid PRIMARY KEY,
    prefix       text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    objects      bigint NOT NULL DEFAULT 0,
    missing      bigint NOT NULL DEFAULT 0,
    altered      bigint NOT NULL DEFAULT 0,
    unexpected   bigint NOT NULL DEFAULT 0,
    chain_faults bigint NOT NULL DEFAULT 0,
    checkpoint_faults bigint NOT NULL DEFAULT 0
);

-- The archiver appends to its partitions' streams and the media sweep's; retention to the governance stream
-- (retention runs, erasures), and `wa-archive recover` (as the owner) resets them. The console appends nothing: it
-- may not write the bucket.
GRANT SELECT, INSERT, UPDATE ON chain_heads TO wa_archiver;
GRANT SELECT, INSERT, UPDATE ON chain_heads TO wa_retention;
GRANT SELECT, INSERT, UPDATE ON verify_runs TO wa_retention;
