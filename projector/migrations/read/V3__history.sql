-- Every event of a patient or an order, in stream order, with what it
-- changed and the record as it stood after it: history and as-of reads are
-- served from here, never from the event store. Append-only: one row per
-- (stream, version), written once by the projector behind its version gate.
CREATE TABLE history (
    stream_id       UUID NOT NULL,
    version         BIGINT NOT NULL,
    stream_type     TEXT NOT NULL,
    event_id        UUID NOT NULL,
    event_type      TEXT NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    actor           JSONB NOT NULL,
    command_id      UUID NOT NULL,
    idempotency_key TEXT,
    changes         JSONB NOT NULL,
    state           JSONB NOT NULL,
    PRIMARY KEY (stream_id, version)
);

CREATE FUNCTION history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'history is append-only';
END
$$;
CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION history_is_append_only();
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON history
    FOR EACH STATEMENT EXECUTE FUNCTION history_is_append_only();
