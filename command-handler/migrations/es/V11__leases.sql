-- Leases of the single-writer processes (the relay, the mailer, the
-- analytics publisher): one row per role; the holder renews it, in each
-- transaction that writes under it, with its epoch (platform::lease). A
-- standby takes it once it has run out; every take raises the epoch, so a
-- former holder's writes fail.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder uuid NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
