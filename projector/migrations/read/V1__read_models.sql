-- Read models, built only from the Kafka log by the projector. Every column
-- comes from events (no now()), so a rebuild gives the same rows.
CREATE TABLE patients (
    patient_id          UUID PRIMARY KEY,
    client_id           TEXT NOT NULL,
    location_id         TEXT NOT NULL,
    external_patient_id TEXT,
    first_name          TEXT NOT NULL,
    last_name           TEXT NOT NULL,
    date_of_birth       DATE NOT NULL,
    sex                 TEXT NOT NULL,
    email               TEXT,
    phone               TEXT,
    address             JSONB,
    version             BIGINT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX patients_page ON patients (created_at, patient_id);
CREATE INDEX patients_external ON patients (client_id, external_patient_id);
CREATE INDEX patients_last_name ON patients (last_name);
CREATE INDEX patients_dob ON patients (date_of_birth);
CREATE INDEX patients_updated ON patients (updated_at);

CREATE TABLE accounts (
    account_id UUID PRIMARY KEY,
    patient_id UUID NOT NULL UNIQUE,
    status     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    name      TEXT NOT NULL
);

CREATE TABLE locations (
    location_id TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL,
    name        TEXT NOT NULL
);

CREATE TABLE partners (
    partner_id  UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    permissions TEXT[] NOT NULL,
    scope       JSONB NOT NULL,
    disabled    BOOLEAN NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- The version applied per stream: re-delivered events are skipped, and
-- consistency tokens wait on it.
CREATE TABLE stream_versions (
    stream_id UUID PRIMARY KEY,
    version   BIGINT NOT NULL
);

-- Kafka offsets, stored in the same transaction as the rows they produced.
CREATE TABLE consumer_offsets (
    topic       TEXT NOT NULL,
    partition   INT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);
