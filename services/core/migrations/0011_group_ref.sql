-- Cloud API groups (docs/GDPR.md, "Groups"): the group an event belongs to, as its pseudonym
-- (HMAC-SHA256(pepper, "grp\0" + group id), services/core/pseudonym.py), never the group id itself. Each record stays
-- sealed under its own person's key; this column only gathers a group's records, of every participant, into one
-- timeline. NULL for every event outside a group: adding a nullable column does not rewrite the table, and the
-- partial index holds the group events alone, in the timeline's order. Building the index reads the table once while
-- writes wait; on a large archive, build it beforehand with CREATE INDEX CONCURRENTLY (docs/OPERATIONS.md,
-- "Upgrading") and this migration finds it there.
ALTER TABLE archived_events ADD COLUMN IF NOT EXISTS group_ref bytea;
CREATE INDEX IF NOT EXISTS archived_events_group ON archived_events (group_ref, event_time) WHERE group_ref IS NOT NULL;
