-- Processes that keep partners' access in memory (platform::access_cache).
-- Each holds a lease that it renews with every read of `partners`;
-- `refreshed_at` is when that read's transaction began, so the read saw
-- every change committed before it. A change to a partner is complete when
-- no holder with a live lease last read before the change committed.
CREATE TABLE access_cache_holders (
    holder       UUID PRIMARY KEY,
    refreshed_at TIMESTAMPTZ NOT NULL,
    lease_until  TIMESTAMPTZ NOT NULL
);

-- Wakes the holders of this schema whenever a partner changes, however it
-- was changed.
CREATE FUNCTION partners_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('partners_changed', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
CREATE TRIGGER partners_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON partners
    FOR EACH STATEMENT EXECUTE FUNCTION partners_changed();
