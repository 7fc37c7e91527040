-- A leaner index (docs/ARCHITECTURE.md, "Binary keys, one row per event"). Event ids and pseudonyms are stored as
-- the bytes they are, not as their hex text: 16 and 32 bytes instead of 33 and 65, compared with memcmp instead
-- of the collation's string comparison, in the heap and in every index that holds them. Measured by
-- bench/index_schema.py: PostgreSQL's CPU per indexed event 0.63-0.75x of the text layout, 447 bytes on disk per
-- event instead of 697. Nothing queries by message_ref alone (deleted/edited badges look up
-- original_message_ref): its index goes.
--
-- The type changes rewrite both tables and rebuild their indexes under an exclusive lock: on a large archive, run
-- this upgrade in a maintenance window with the archivers stopped (docs/OPERATIONS.md, "Upgrading").
DROP INDEX IF EXISTS archived_events_message;

ALTER TABLE archived_events
    ALTER COLUMN event_id TYPE bytea USING decode(event_id, 'hex'),
    ALTER COLUMN subject_ref TYPE bytea USING decode(subject_ref, 'hex'),
    ALTER COLUMN message_ref TYPE bytea USING decode(message_ref, 'hex'),
    ALTER COLUMN original_message_ref TYPE bytea USING decode(original_message_ref, 'hex');

ALTER TABLE archived_media
    ALTER COLUMN event_id TYPE bytea USING decode(event_id, 'hex'),
    ALTER COLUMN subject_ref TYPE bytea USING decode(subject_ref, 'hex');
