-- Media whose download failed, retried by the archiver's sweep (services/archiver/sweep.py) while Meta still holds
-- them: a media id lives 30 days, a download URL only minutes, so each retry asks the Graph API afresh. No personal
-- data: the message's event id (a hash), when to try next, until when, and the last failure reason (a fixed word,
-- services/archiver/media.py FAILURE_REASONS). What to fetch is added sealed under the person's key by
-- 0020_media_retry_sealed.sql (with the grants): erasing the person leaves nothing here anyone can open.
CREATE TABLE IF NOT EXISTS media_retry (
    event_id         bytea PRIMARY KEY,
    sweeps           integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    give_up_at       timestamptz NOT NULL,
    last_failure     text NOT NULL,
    queued_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS media_retry_due ON media_retry (next_attempt_at);
