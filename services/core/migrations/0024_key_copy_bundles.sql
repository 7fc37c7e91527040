-- Key copies in bundles (services/core/key_copies.py): the new keys of a batch share one object of the bucket, and
-- key_copy_members says which object holds a copy of which key under which KEK. A key is copied when a member
-- matches its current row; an erasure deletes every object holding one of its keys (the others' keys are copied
-- again first). Object names are relative to the copies' root (keys/<prefix>/): `b/<newest first>-<uuid>` for a
-- bundle, `<subject_ref>/<dek_id>` for a copy of the first format, one key per object.
CREATE TABLE key_copy_members (
    dek_id      uuid NOT NULL,
    object      text NOT NULL,
    subject_ref text NOT NULL,
    kek_id      text NOT NULL,
    PRIMARY KEY (dek_id, object)
);
CREATE INDEX key_copy_members_object ON key_copy_members (object);

-- The copies of the first format stay where they are, listed as members. subject_keys.copied_at is no longer read
-- or written by this build; it stays (migrations only add) for the archivers of the previous build that run beside
-- this schema during a rolling upgrade (an erasure also deletes the first-format copy of each key it destroys, so
-- what they copy meanwhile is not left behind).
INSERT INTO key_copy_members (dek_id, object, subject_ref, kek_id)
SELECT dek_id, subject_ref || '/' || dek_id::text, subject_ref, kek_id FROM subject_keys WHERE copied_at IS NOT NULL;

-- The archiver writes bundles; retention also deletes them (erasure, KEK retirement); the console finds an
-- erasure's objects (its identity cannot delete them: the erasure stays in progress until retention finishes it).
GRANT SELECT, INSERT ON key_copy_members TO wa_archiver;
GRANT SELECT, INSERT, DELETE ON key_copy_members TO wa_retention;
GRANT SELECT ON key_copy_members TO wa_console;
