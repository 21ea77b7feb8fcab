-- The public keys that verify partner access tokens (Ed25519), as every API
-- process reads them and publishes them at /.well-known/jwks.json. The
-- private key is in a file only the token-minting processes load; it never
-- enters the database. A rotated key is retired, not removed: its tokens
-- stay valid until they expire.
CREATE TABLE token_keys (
    kid text PRIMARY KEY,
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    published_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
