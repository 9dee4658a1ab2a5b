-- Call-log retention: the age-based prune selects calls by send time and
-- left-over sessions by creation time, across all projects.
CREATE INDEX llm_calls_sent_at ON llm_calls (sent_at_ms);
CREATE INDEX llm_sessions_created ON llm_sessions (created_at_ms);
