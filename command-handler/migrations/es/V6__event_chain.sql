-- The relay's hash chains over the log (platform::chain): one row per event,
-- in publication order, written in the transaction that records how far the
-- relay got. seq numbers the whole-log chain; stream_hash links a stream's
-- versions. The signed checkpoints of log_hash live outside the database
-- (the lis.chain.v1 topic), signed with a key the database never holds.
CREATE TABLE event_chain (
    seq         BIGINT PRIMARY KEY,
    position    BIGINT NOT NULL UNIQUE,
    event_id    UUID NOT NULL UNIQUE,
    stream_id   UUID NOT NULL,
    version     BIGINT NOT NULL,
    event_hash  BYTEA NOT NULL,
    stream_hash BYTEA NOT NULL,
    log_hash    BYTEA NOT NULL
);
CREATE INDEX event_chain_stream ON event_chain (stream_id, version);
