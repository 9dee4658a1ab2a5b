-- Context-aware turns: the prompt tokens the upstream reported for a
-- conversation's latest chat model call (its last context size).
ALTER TABLE conversations ADD COLUMN context_tokens BIGINT NULL;
