-- API keys: each belongs to a project and has a role. Only a SHA-256 hash of
-- the key (hex) and a short prefix (to recognise it in listings) are stored;
-- the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id             TEXT COLLATE "C"   NOT NULL PRIMARY KEY,
    project_id     TEXT COLLATE "C"   NOT NULL REFERENCES projects (id),
    name           TEXT     NOT NULL,
    role           TEXT     NOT NULL CHECK (role IN ('admin', 'member', 'read')),
    prefix         TEXT     NOT NULL,
    key_hash       TEXT     NOT NULL UNIQUE,
    created_at_ms  BIGINT   NOT NULL,
    revoked_at_ms  BIGINT
);

CREATE INDEX api_keys_project ON api_keys (project_id, created_at_ms);
