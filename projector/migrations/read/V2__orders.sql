CREATE TABLE orders (
    order_id          UUID PRIMARY KEY,
    patient_id        UUID NOT NULL,
    client_id         TEXT NOT NULL,
    location_id       TEXT NOT NULL,
    accession_number  TEXT NOT NULL,
    external_order_id TEXT,
    tests             JSONB NOT NULL,
    specimen          JSONB NOT NULL,
    priority          TEXT NOT NULL,
    status            TEXT NOT NULL,
    results           JSONB NOT NULL,
    cancel_reason     TEXT,
    version           BIGINT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_page ON orders (created_at, order_id);
CREATE INDEX orders_patient ON orders (patient_id);
CREATE INDEX orders_accession ON orders (accession_number);
CREATE INDEX orders_external ON orders (external_order_id);
CREATE INDEX orders_updated ON orders (updated_at);

-- Every correction keeps the values it replaced.
CREATE TABLE order_result_history (
    order_id   UUID NOT NULL,
    version    BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    previous   JSONB NOT NULL,
    corrected_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, version)
);

CREATE TABLE catalog_tests (
    code       TEXT PRIMARY KEY,
    definition JSONB NOT NULL,
    version    BIGINT NOT NULL
);
