-- Retention classes anchored on the person's last contact (services/core/policy.py, "anchor: last_contact"): the
-- record is indexed with the expiry of its own time, a lower bound, and marked. A retention run that finds a marked
-- record expired looks for a later contact of the same pseudonym and moves the expiry on instead of deleting.
-- Adding a column with a constant default does not rewrite the table.
ALTER TABLE archived_events ADD COLUMN anchor_last_contact boolean NOT NULL DEFAULT false;
