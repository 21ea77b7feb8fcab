-- Where each minute of the access log begins: for every minute (UTC) in
-- which a read was answered, a transaction id no greater than that of any
-- entry stamped in that minute. A time filter (`since`) starts its scan of
-- the log there instead of at the log's first entry. The log's writer
-- notes a minute with the first commit that holds one of its entries, in
-- that commit; writers of several processes keep the smallest.
CREATE TABLE access_log_minutes (
    minute     TIMESTAMPTZ PRIMARY KEY,
    first_txid XID8 NOT NULL
);

INSERT INTO access_log_minutes (minute, first_txid)
SELECT DISTINCT ON (1) date_trunc('minute', at, 'UTC'), txid FROM access_log ORDER BY 1, 2;

-- A minute's row may only move earlier: a later start or a removed minute
-- would hide entries from time filters.
CREATE FUNCTION access_log_minutes_only_earlier() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.minute = OLD.minute AND NEW.first_txid <= OLD.first_txid THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'a minute of the access log may only begin earlier';
END
$$;
CREATE TRIGGER access_log_minutes_only_earlier BEFORE UPDATE OR DELETE ON access_log_minutes
    FOR EACH ROW EXECUTE FUNCTION access_log_minutes_only_earlier();
CREATE TRIGGER access_log_minutes_no_truncate BEFORE TRUNCATE ON access_log_minutes
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_minutes_only_earlier();
