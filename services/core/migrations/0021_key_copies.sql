-- Copies of the subject keys outside PostgreSQL (services/core/key_copies.py): copied_at says when a key's copy was
-- written to the bucket (NULL: not yet, or the key was rewrapped since and its copy must be written again). The
-- archiver marks the keys it copies, retention those a rewrap wrote again. Restoring keys from their copies
-- (`wa-archive recover`) runs as the schema's owner, after a restore: no service may create a key but the archiver.
ALTER TABLE subject_keys ADD COLUMN copied_at timestamptz;
GRANT UPDATE (copied_at) ON subject_keys TO wa_archiver;
GRANT UPDATE (copied_at) ON subject_keys TO wa_retention;
