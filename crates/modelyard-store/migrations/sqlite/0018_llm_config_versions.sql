-- LLM config versions (issue 16 §2): every change of a config is a new
-- version, and every version stays readable, also after later changes and
-- after the config is (soft-)deleted. `llm_configs.version` is the current
-- one; a config that exists at this migration becomes version 1, its body
-- as it is now (written at its `updated_at_ms`). A version row is the body
-- of the config as it was: display name, model, system prompt, provider
-- options and base URL; `created_at_ms` is when it was written.
ALTER TABLE llm_configs ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

CREATE TABLE llm_config_versions (
    project_id            TEXT    NOT NULL REFERENCES projects (id),
    llm_id                TEXT    NOT NULL REFERENCES llm_configs (id),
    version               BIGINT  NOT NULL,
    display_name          TEXT    NOT NULL,
    model                 TEXT    NOT NULL,
    system_prompt         TEXT    NULL,
    provider_options_json TEXT    NOT NULL,
    base_url              TEXT    NULL,
    created_at_ms         BIGINT  NOT NULL,
    PRIMARY KEY (project_id, llm_id, version)
);

INSERT INTO llm_config_versions (project_id, llm_id, version, display_name, model,
    system_prompt, provider_options_json, base_url, created_at_ms)
SELECT project_id, id, 1, display_name, model, system_prompt, provider_options_json,
    base_url, updated_at_ms
FROM llm_configs;

-- The LLM config snapshot a session ran with (camelCase JSON: llmId,
-- version, source, resolvedFrom, model, providerOptions, systemPrompt,
-- baseUrl). NULL for a session that ran without one (a plain gateway
-- request) and for sessions recorded before this migration.
ALTER TABLE llm_sessions ADD COLUMN config_json TEXT NULL;
