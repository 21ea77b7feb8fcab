-- Who read or tried to read which patient or order, when, through which
-- endpoint, and with what answer. Not derived from events (a read changes no
-- business state), so it lives beside the event store, not in the disposable
-- read models. Append-only; never a query string.
CREATE TABLE access_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction: entries are read in (txid, id) order and
    -- only below the oldest running transaction, so that paging never
    -- passes over an entry that commits late (as the relay reads events).
    txid        XID8 NOT NULL DEFAULT pg_current_xact_id(),
    at          TIMESTAMPTZ NOT NULL,
    partner_id  UUID NOT NULL,
    record_type TEXT NOT NULL,
    record_id   UUID NOT NULL,
    -- The record's client and location when the read found it; null for a
    -- record that does not exist.
    client_id   TEXT,
    location_id TEXT,
    endpoint    TEXT NOT NULL,
    status      SMALLINT NOT NULL,
    PRIMARY KEY (txid, id)
);
CREATE INDEX access_log_record ON access_log (record_id, txid, id);
CREATE INDEX access_log_partner ON access_log (partner_id, txid, id);

CREATE FUNCTION access_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the access log is append-only';
END
$$;
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_is_append_only();
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_is_append_only();
