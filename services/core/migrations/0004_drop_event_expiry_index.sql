-- Retention finds its candidates through archive_objects.expires_at (0003); nothing queries archived_events by
-- expires_at any more (the column stays: search shows it and the object expiry is computed from it). An unused
-- index costs every archived row an insertion and a WAL record.
DROP INDEX IF EXISTS archived_events_expiry;
