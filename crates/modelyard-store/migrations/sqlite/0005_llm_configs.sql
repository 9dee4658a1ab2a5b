-- LLM configs (DESIGN.md §2): reusable, non-secret model + system prompt +
-- provider options. `system-default` rows are materialized from the server
-- config's [defaults.presets.<name>] once per (preset_name, preset_version);
-- the unique index makes that materialization safe under concurrency
-- (INSERT ... ON CONFLICT DO NOTHING, then SELECT). User rows have NULL
-- preset columns, which never collide. Booleans are INTEGER 0/1.

CREATE TABLE llm_configs (
    id                    TEXT    NOT NULL PRIMARY KEY,
    project_id            TEXT    NOT NULL REFERENCES projects (id),
    source                TEXT    NOT NULL CHECK (source IN ('system-default', 'user')),
    display_name          TEXT    NOT NULL,
    model                 TEXT    NOT NULL,
    system_prompt         TEXT    NULL,
    provider_options_json TEXT    NOT NULL,
    base_url              TEXT    NULL,
    preset_name           TEXT    NULL,
    preset_version        INTEGER NULL,
    created_at_ms         BIGINT  NOT NULL,
    updated_at_ms         BIGINT  NOT NULL,
    deleted               INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    CHECK ((source = 'system-default') = (preset_name IS NOT NULL AND preset_version IS NOT NULL))
);

CREATE UNIQUE INDEX llm_configs_preset ON llm_configs (project_id, preset_name, preset_version);
CREATE INDEX llm_configs_project_created ON llm_configs (project_id, created_at_ms, id);
