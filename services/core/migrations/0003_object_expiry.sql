-- Retention selects whole objects. Each object carries the latest expiry of the records written into it
-- ('infinity' when one of them is kept forever), so a retention run finds its candidates with one index
-- range scan instead of checking every index row of the archive. It only ever grows (a replay that rewrites an
-- object keeps the later date), so it can never make an object expire early.
ALTER TABLE archive_objects ADD COLUMN expires_at timestamptz;

UPDATE archive_objects o SET expires_at = coalesce(
    (SELECT CASE WHEN bool_or(e.expires_at IS NULL) THEN 'infinity'::timestamptz ELSE max(e.expires_at) END
       FROM archived_events e WHERE e.object_key = o.object_key),
    -- no index row points here any more (a replay moved them to a newer object): nothing to keep
    '-infinity'::timestamptz);

ALTER TABLE archive_objects ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX archive_objects_expiry ON archive_objects (expires_at);
