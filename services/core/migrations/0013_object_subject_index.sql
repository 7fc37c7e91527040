-- A keyword search looks up, for each (object, person) pair whose tokens hold the words, that person's events in
-- that object (services/retention/search.py). The object index alone made each lookup combine two indexes; with
-- the person beside the object it is one descent (bench/console.py: medium-word searches 2-3x faster on a
-- 1,000,000-message archive). Every query by object alone (retention, erasure, rebuild) uses its prefix, so it
-- replaces the object index rather than adding one: the archiver maintains the same number of indexes.
CREATE INDEX IF NOT EXISTS archived_events_object_subject ON archived_events (object_key, subject_ref);
DROP INDEX IF EXISTS archived_events_object;
