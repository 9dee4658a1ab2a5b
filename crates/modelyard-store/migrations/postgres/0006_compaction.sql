-- Compaction: the summary that replaces a conversation's messages up to
-- compacted_through_seq in later turns.
ALTER TABLE conversations ADD COLUMN compacted_through_seq BIGINT NULL;
ALTER TABLE conversations ADD COLUMN summary TEXT NULL;
