-- Least privilege (DESIGN.md §1.8): the schema belongs to the role that runs the migrations (the migrator, owner
-- of the database); each service connects as a role of its own that may run only the statements its code runs.
-- The roles are cluster objects and this migration does not create them (that would need CREATEROLE, which lets
-- its holder grant itself far more than this schema): deploy/local/stack.sh creates them on the local stack, the
-- platform team in a deployment (deploy/k8s/README.md, "PostgreSQL"). ingest has no role at all: it never
-- touches the database.
--
--   wa_archiver   writes the index and creates data keys; reads the suppression list of erased people
--   wa_retention  the retention service and the wa-archive CLI: runs, holds, erasures, exports, rebuild-index
--   wa_console    the review console: reads, its sessions, the audit rows of what people do in it, and the
--                 DPO pages (holds, erasure decisions, erasure by key destruction, dry runs); never creates a key
--
-- Later migrations grant explicitly, table by table (no ALTER DEFAULT PRIVILEGES: a default grant would give
-- every service every new table). tests/integration/test_least_privilege.py fails for a table whose grants are
-- not listed there.
DO $$
DECLARE
    missing text;
BEGIN
    SELECT string_agg(r, ', ') INTO missing
    FROM unnest(ARRAY['wa_archiver', 'wa_retention', 'wa_console']) AS r
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'roles % do not exist', missing
            USING HINT = 'create them first: deploy/local/stack.sh up (local), deploy/k8s/README.md "PostgreSQL"';
    END IF;
END $$;

-- Nothing for PUBLIC, then the grants below (a migration before this one may already have granted its own table
-- to a role: that grant stays). The schema is the current one, not `public` by name:
-- tests/integration/test_migrations.py applies every migration in a scratch schema.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM PUBLIC', current_schema());
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM PUBLIC', current_schema());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO wa_archiver, wa_retention, wa_console', current_schema());
END $$;

-- Every service checks at start-up that the schema is at least the version it was built for.
GRANT SELECT ON schema_migrations TO wa_archiver, wa_retention, wa_console;

-- archiver (services/core/index.py, keyring.py, holders.py). SELECT where a statement reads the table: an
-- ON CONFLICT DO UPDATE that reads the old row, a DELETE with a WHERE. The keyring deletes a key row that came
-- back from a backup although its key was shredded (DELETE, and SELECT on shredded_keys), and locks the key rows
-- of a batch FOR SHARE while it indexes it, which PostgreSQL allows only with UPDATE on some column: on
-- created_at alone, the one column whose change means nothing to the cryptography.
GRANT SELECT, INSERT, DELETE ON subject_keys TO wa_archiver;
GRANT UPDATE (created_at) ON subject_keys TO wa_archiver;
GRANT SELECT ON shredded_keys, erased_subjects TO wa_archiver;
GRANT SELECT, INSERT, UPDATE ON archive_objects, archived_events, archived_media TO wa_archiver;
GRANT INSERT ON business_numbers, subject_aliases TO wa_archiver;
-- ON CONFLICT (event_id) DO NOTHING reads the arbiter column: SELECT too.
GRANT SELECT, INSERT ON erased_events TO wa_archiver;
GRANT SELECT, INSERT, DELETE ON keyword_index TO wa_archiver;
GRANT SELECT, INSERT ON number_holders TO wa_archiver;

-- retention and the CLI: everything the actions do, except creating a data key (the KEK rewrap's UPDATE of two
-- columns of subject_keys is granted by 0019, the migration after the rewrap's arrival).
GRANT SELECT, DELETE ON subject_keys TO wa_retention;
GRANT SELECT, INSERT ON shredded_keys TO wa_retention;
GRANT SELECT, INSERT, UPDATE ON erased_subjects TO wa_retention;
GRANT SELECT, INSERT, UPDATE, DELETE ON archive_objects, archived_events, archived_media TO wa_retention;
GRANT SELECT, INSERT, DELETE ON subject_aliases, keyword_index TO wa_retention;
GRANT SELECT, INSERT ON business_numbers, erased_events, number_holders TO wa_retention;
GRANT SELECT, INSERT, UPDATE ON legal_holds, erasure_requests, retention_runs TO wa_retention;
GRANT SELECT, INSERT ON audit_log TO wa_retention;
GRANT USAGE ON SEQUENCE audit_log_audit_id_seq TO wa_retention;

-- console: searches and reads, its own sessions, and the DPO pages. Erasure destroys keys (DELETE on
-- subject_keys, INSERT into shredded_keys) and index rows; the console never INSERTs or UPDATEs a key.
GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO wa_console;
GRANT SELECT, DELETE ON subject_keys TO wa_console;
GRANT SELECT, INSERT ON shredded_keys TO wa_console;
GRANT SELECT, INSERT, UPDATE ON erased_subjects TO wa_console;
GRANT SELECT, DELETE ON archive_objects, archived_events, archived_media, subject_aliases, keyword_index
    TO wa_console;
GRANT SELECT ON business_numbers, number_holders TO wa_console;
GRANT SELECT, INSERT, UPDATE ON legal_holds, erasure_requests, retention_runs TO wa_console;
GRANT SELECT, INSERT ON audit_log TO wa_console;
GRANT USAGE ON SEQUENCE audit_log_audit_id_seq TO wa_console;

-- The audit log is append-only for everyone: no service may UPDATE, DELETE or TRUNCATE it (not granted above),
-- none owns it (so none can drop its triggers), and a TRUNCATE by its owner is refused too.
CREATE OR REPLACE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END $$;
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
