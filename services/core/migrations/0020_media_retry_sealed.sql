-- The media sweep's queue (0016) under least privilege (0017_roles.sql), and what it retries without reading the
-- archive. `sealed_ref` is the medium to fetch again — its media id, the webhook's sha256 and MIME type, and the
-- message's times — as JSON sealed with the message's person's key (AES-256-GCM; associated data: the event id
-- with `.retry` and the person's pseudonym; services/archiver/sealing.py seal_media_retry). So the archiver, whose
-- S3 identity only writes, needs no object read to retry, and an erasure leaves nothing here anyone can open.
-- The archiver queues, leases, retries and drops entries; retention's writes of media rows (rebuild-index) take
-- archived media out of the queue.
ALTER TABLE media_retry ADD COLUMN IF NOT EXISTS sealed_ref bytea;
GRANT SELECT, INSERT, UPDATE, DELETE ON media_retry TO wa_archiver;
GRANT SELECT, DELETE ON media_retry TO wa_retention;
