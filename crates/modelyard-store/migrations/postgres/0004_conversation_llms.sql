-- A conversation's default LLM config and per-operation overrides
-- (operation -> config id, as a JSON object).
ALTER TABLE conversations ADD COLUMN llm_id TEXT NULL;
ALTER TABLE conversations ADD COLUMN llm_overrides_json TEXT NOT NULL DEFAULT '{}';
