-- Request ids (issue 19): the `x-request-id` of the request that made a
-- session (a gateway request, or the request that started a turn), so a
-- user's complaint can be traced to its calls. NULL for sessions recorded
-- before, and for those no request started (the sweeper, titles run later).
ALTER TABLE llm_sessions ADD COLUMN request_id TEXT;
CREATE INDEX llm_sessions_request_id ON llm_sessions (project_id, request_id);
