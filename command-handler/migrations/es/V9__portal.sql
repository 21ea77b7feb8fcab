-- The patient portal's write-side state beside the account streams: the
-- password's slow hash and the run of failed logins (never in an event),
-- and the portal's sessions, kept only as hashes of their cookies.
ALTER TABLE accounts
    ADD COLUMN password_hash TEXT,
    ADD COLUMN failed_logins INT NOT NULL DEFAULT 0;

CREATE TABLE portal_sessions (
    session_hash BYTEA PRIMARY KEY,
    account_id   UUID NOT NULL REFERENCES accounts (account_id),
    csrf_token   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX portal_sessions_account ON portal_sessions (account_id);

-- The mailer's one-time links: an activation ('activate') or the
-- confirmation of a new login ('confirm_login', with that address).
ALTER TABLE activation_tokens
    ADD COLUMN purpose TEXT NOT NULL DEFAULT 'activate',
    ADD COLUMN email TEXT;
CREATE INDEX activation_tokens_account ON activation_tokens (account_id);
