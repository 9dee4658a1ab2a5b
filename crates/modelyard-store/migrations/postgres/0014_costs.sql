-- Costs (issue 21): every call row carries its cost, computed from its usage
-- when the call log writes it. `cost_nusd` is in nano-USD (1e-9 USD), NULL
-- when it cannot be told (usage not reported, or an unpriced cloud model);
-- `price_source` is 'config', 'provider' or 'none' (NULL for calls recorded
-- before prices existed); `price_version` fingerprints the price used.
-- `cache_creation_tokens`: prompt tokens written to the provider's cache
-- (part of prompt_tokens, like cached_prompt_tokens).
ALTER TABLE llm_calls ADD COLUMN cache_creation_tokens BIGINT;
ALTER TABLE llm_calls ADD COLUMN cost_nusd BIGINT;
ALTER TABLE llm_calls ADD COLUMN price_source TEXT;
ALTER TABLE llm_calls ADD COLUMN price_version TEXT;
-- The API key whose request made the session (NULL without keys, and for
-- sessions no request made): `GET /v1/usage?groupBy=key`.
ALTER TABLE llm_sessions ADD COLUMN key_id TEXT COLLATE "C";
-- Cost totals of the materialized conversation tables (nano-USD; NULL while
-- no message of theirs had a known cost). A message's cost is in its
-- usage_json (`costNusd`).
ALTER TABLE conversations ADD COLUMN cost_nusd BIGINT;
ALTER TABLE turns ADD COLUMN cost_nusd BIGINT;
