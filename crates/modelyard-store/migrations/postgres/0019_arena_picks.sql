-- Arena picks (issue 16 §1): which answer of an arena run the user chose,
-- and against which others (the run's other completed models, a JSON array
-- of model ids). One pick per run. `conversation_id` is NULL for a
-- standalone run (`POST /v1/arena/{runId}/pick`).
CREATE TABLE arena_picks (
    run_id          TEXT    PRIMARY KEY,
    project_id      TEXT    NOT NULL REFERENCES projects (id),
    conversation_id TEXT    NULL,
    model           TEXT    NOT NULL,
    others_json     TEXT    NOT NULL,
    created_at_ms   BIGINT  NOT NULL
);
CREATE INDEX arena_picks_project_created ON arena_picks (project_id, created_at_ms);

-- The conversation arena run that answers a turn (TurnRecord::arena_run_id,
-- set by `arena.started`); NULL for every other turn.
ALTER TABLE turns ADD COLUMN arena_run_id TEXT NULL;
