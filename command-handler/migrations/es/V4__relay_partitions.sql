-- Where each partition stood at the relay's last checkpoint: on start the
-- relay reads every record after these offsets and skips exactly the events
-- already there, in order (never more).
CREATE TABLE relay_partitions (
    topic       TEXT NOT NULL,
    partition   INT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);
