-- The conversation arena run that waits for a pick
-- (ConversationRecord::pending_arena): set by an `arena.completed` with an
-- answer to pick, cleared by `arena.picked` and by the turn's end; both
-- NULL otherwise.
ALTER TABLE conversations ADD COLUMN pending_arena_run_id TEXT NULL;
ALTER TABLE conversations ADD COLUMN pending_arena_turn_id TEXT NULL;

-- Conversations already waiting for a pick: their running turn is
-- `awaiting_pick` and names its run (migration 0019).
UPDATE conversations
SET pending_arena_run_id = (
        SELECT t.arena_run_id FROM turns t
        WHERE t.project_id = conversations.project_id
          AND t.id = conversations.running_turn_id
          AND t.status = 'awaiting_pick'
    ),
    pending_arena_turn_id = (
        SELECT t.id FROM turns t
        WHERE t.project_id = conversations.project_id
          AND t.id = conversations.running_turn_id
          AND t.status = 'awaiting_pick'
          AND t.arena_run_id IS NOT NULL
    )
WHERE running_turn_id IS NOT NULL;
