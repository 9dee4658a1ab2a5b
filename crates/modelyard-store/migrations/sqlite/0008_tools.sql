-- Tools in turns: whether a conversation offers the advisor tool.
-- (Tool messages, requires_action turns and client tools need no new
-- columns: role 'tool', status 'requires_action', the turn.started event.)
ALTER TABLE conversations ADD COLUMN advisor INTEGER NOT NULL DEFAULT 0 CHECK (advisor IN (0, 1));
