-- The erasure workflow (docs/GDPR.md, "Erasure requests"): received → blocked (a hold) → in_progress →
-- completed, or refused with its legal ground; extended is an open request whose deadline was extended once by
-- two months (Art. 12(3)). Open requests (received, blocked, extended, in_progress) are processed by the scheduled
-- retention run and, for blocked ones, when a hold that blocked them is released.
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_status_check;
UPDATE erasure_requests SET status = 'received' WHERE status = 'pending';
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_status_check
    CHECK (status IN ('received', 'blocked', 'in_progress', 'completed', 'refused', 'extended'));

ALTER TABLE erasure_requests
    ADD COLUMN extended_at timestamptz,
    ADD COLUMN extension_reason text,
    -- Art. 17(3) (a)-(e), Art. 12(5)
    ADD COLUMN refusal_ground text CHECK (refusal_ground IN ('freedom_of_expression', 'legal_obligation',
        'public_health', 'archiving_research_statistics', 'legal_claims', 'manifestly_unfounded_or_excessive')),
    ADD COLUMN refused_at timestamptz,
    ADD CONSTRAINT erasure_refusal_has_ground CHECK ((status = 'refused') = (refusal_ground IS NOT NULL));

DROP INDEX IF EXISTS erasure_requests_open;
CREATE INDEX erasure_requests_open ON erasure_requests (deadline_at)
    WHERE status IN ('received', 'blocked', 'extended', 'in_progress');
