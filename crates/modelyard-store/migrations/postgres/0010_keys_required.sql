-- Server-wide settings (one row per name). `keys_required` is written by the
-- first API key ever created and never removed: once a key has existed the
-- server never runs open again, even if every key is revoked.
CREATE TABLE server_settings (
    name           TEXT COLLATE "C"   NOT NULL PRIMARY KEY,
    value          TEXT     NOT NULL,
    updated_at_ms  BIGINT   NOT NULL
);

-- A database that already had keys (even revoked ones) requires them.
INSERT INTO server_settings (name, value, updated_at_ms)
SELECT 'keys_required', 'true', (SELECT MIN(created_at_ms) FROM api_keys)
WHERE EXISTS (SELECT 1 FROM api_keys);
