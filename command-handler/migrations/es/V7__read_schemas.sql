-- The copies of the read models: the one readers use (active), one being
-- rebuilt from the log by `lis replay` (building), one rebuilt and kept
-- current by the projectors until readers switch to it (ready), and the
-- copies readers left (old), kept until `lis replay --drop-old`. Without an
-- active row, readers use the configured schema (LIS_READ_SCHEMA).
CREATE TABLE read_schemas (
    name        TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('building', 'ready', 'active', 'old')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    switched_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX read_schemas_one_active ON read_schemas (state) WHERE state = 'active';
CREATE UNIQUE INDEX read_schemas_one_rebuild ON read_schemas ((true)) WHERE state IN ('building', 'ready');
