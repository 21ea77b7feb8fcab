-- The event store: every change of business state, in one table.
-- txid is the writing transaction's id; the relay publishes in (txid, position)
-- order and only below the oldest running transaction (pg_snapshot_xmin), so
-- an event that commits late is never skipped.
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid            XID8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id        UUID NOT NULL,
    stream_type     TEXT NOT NULL,
    stream_id       UUID NOT NULL,
    version         BIGINT NOT NULL CHECK (version >= 1),
    event_type      TEXT NOT NULL,
    schema_version  INT NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    actor           JSONB NOT NULL,
    command_id      UUID NOT NULL,
    idempotency_key TEXT,
    data            JSONB NOT NULL,
    CONSTRAINT events_event_id UNIQUE (event_id),
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX events_relay_order ON events (txid, position);

-- How far the relay has published.
CREATE TABLE relay_checkpoint (
    id       INT PRIMARY KEY CHECK (id = 1),
    txid     XID8 NOT NULL,
    position BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Write-side state of the reference data, kept in the same transaction as
-- its events; used to validate commands and to check access.
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    name      TEXT NOT NULL
);

CREATE TABLE locations (
    location_id TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients (client_id),
    name        TEXT NOT NULL
);

CREATE TABLE partners (
    partner_id     UUID PRIMARY KEY,
    client_id      TEXT NOT NULL,
    name           TEXT NOT NULL,
    secret_hash    TEXT NOT NULL,
    secret_version INT NOT NULL DEFAULT 1,
    permissions    TEXT[] NOT NULL,
    scope          JSONB NOT NULL,
    disabled       BOOLEAN NOT NULL DEFAULT false,
    version        BIGINT NOT NULL,
    CONSTRAINT partners_client_id UNIQUE (client_id)
);

-- Uniqueness reservations.
CREATE TABLE patient_external_ids (
    client_id           TEXT NOT NULL,
    external_patient_id TEXT NOT NULL,
    patient_id          UUID NOT NULL,
    CONSTRAINT patient_external_ids_pkey PRIMARY KEY (client_id, external_patient_id)
);
CREATE INDEX patient_external_ids_patient ON patient_external_ids (patient_id);

-- Patient accounts (write side): the login is unique among accounts.
CREATE TABLE accounts (
    account_id UUID PRIMARY KEY,
    patient_id UUID NOT NULL,
    login      TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    CONSTRAINT accounts_patient UNIQUE (patient_id),
    CONSTRAINT accounts_login UNIQUE (login)
);

-- One-time activation tokens, stored only as hashes.
CREATE TABLE activation_tokens (
    token_hash  BYTEA PRIMARY KEY,
    account_id  UUID NOT NULL REFERENCES accounts (account_id),
    event_id    UUID NOT NULL UNIQUE,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    sent_at     TIMESTAMPTZ
);

-- Idempotency records: the first answer to a (partner, method, path, key).
CREATE TABLE idempotency (
    partner_id   UUID NOT NULL,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status       SMALLINT NOT NULL,
    headers      JSONB NOT NULL,
    body         BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, method, path, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
