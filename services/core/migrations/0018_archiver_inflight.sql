-- The archiver's in-flight ledger (services/archiver/inflight.py): per consumer group and partition, the range of
-- events whose write is under way, as (offset, position in the Kafka record) pairs. A row still `writing` when a
-- process starts means the previous process died while writing that range (out of memory, killed): the range is
-- then written in smaller pieces, and an event that was in flight alone at a second death goes to the dead-letter
-- topic instead of stopping the partition. Offsets and positions only: no personal data.
CREATE TABLE IF NOT EXISTS archiver_inflight (
    group_id        text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    first_offset    bigint NOT NULL,
    first_position  integer NOT NULL,
    last_offset     bigint NOT NULL,
    last_position   integer NOT NULL,
    deaths          integer NOT NULL DEFAULT 0,
    state           text NOT NULL CHECK (state IN ('writing', 'suspect')),
    owner           text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, kafka_partition)
);
