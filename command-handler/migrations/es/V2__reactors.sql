-- Kafka offsets of the write side's reactors (the invitation mailer), kept
-- in the same transaction as what they record.
CREATE TABLE reactor_offsets (
    reactor     TEXT NOT NULL,
    topic       TEXT NOT NULL,
    partition   INT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (reactor, topic, partition)
);
