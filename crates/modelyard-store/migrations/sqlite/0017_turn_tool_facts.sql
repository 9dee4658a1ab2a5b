-- A turn's client tools and its tool calls still waiting for results are
-- facts of the fold (TurnRecord::client_tools / pending_tool_calls), kept on
-- the turn row as JSON arrays. NULL marks a row written before this
-- migration: Store::connect re-folds those that still wait for tool results.
ALTER TABLE turns ADD COLUMN client_tools_json TEXT;
ALTER TABLE turns ADD COLUMN pending_tool_calls_json TEXT;
