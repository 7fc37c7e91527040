-- Exports of a search result (services/evidence/jobs.py, scope 'search'): the job names the records it exports by
-- event id, frozen when it was asked for (what the search showed to the person who asked, their reading scope
-- applied), and describes the search without its words or the person it named (services/evidence/selection.py):
-- neither the keywords nor a phone number reach PostgreSQL. `requester_role` is the role the records are read
-- under when the job runs (a reader's case scope applies again then); jobs queued before this column are a DPO's.
-- Columns only, with defaults: the shared database's other branches read the table unchanged.
ALTER TABLE export_jobs ADD COLUMN event_ids text[] NOT NULL DEFAULT '{}';
ALTER TABLE export_jobs ADD COLUMN selection jsonb;
ALTER TABLE export_jobs ADD COLUMN requester_role text NOT NULL DEFAULT 'dpo';
