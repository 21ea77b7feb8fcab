-- Write-side state of the test catalog, kept with its events.
CREATE TABLE catalog_tests (
    code       TEXT PRIMARY KEY,
    definition JSONB NOT NULL,
    version    BIGINT NOT NULL
);

-- Accession numbers are unique in the lab.
CREATE TABLE accession_numbers (
    accession_number TEXT NOT NULL,
    order_id         UUID NOT NULL,
    CONSTRAINT accession_numbers_pkey PRIMARY KEY (accession_number)
);

-- Generated accession numbers: A-YYYYMMDD-NNNNNN with NNNNNN from here.
CREATE SEQUENCE accession_seq;
