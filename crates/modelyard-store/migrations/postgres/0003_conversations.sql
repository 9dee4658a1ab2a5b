-- Conversations: an append-only event log (conversation_events) and the
-- tables materialized from it (conversations, turns, messages), written in
-- the transaction that appends the events, so the tables always equal the
-- fold of the log (modelyard_core::conversation::apply).
-- Token totals are in tokens; JSON is TEXT. Id columns use the "C" collation
-- (byte order), as in 0001.

-- The LLM session of a turn (NULL for gateway sessions).
ALTER TABLE llm_sessions ADD COLUMN turn_id TEXT COLLATE "C";

CREATE INDEX llm_sessions_project_conversation ON llm_sessions (project_id, conversation_id);

CREATE TABLE conversations (
    id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id          TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    parent_id           TEXT COLLATE "C",
    title               TEXT,
    model               TEXT,
    cwd                 TEXT,
    reasoning_effort    TEXT,
    metadata_json       TEXT             NOT NULL,
    latest_model_id     TEXT,
    input_tokens        BIGINT           NOT NULL,
    output_tokens       BIGINT           NOT NULL,
    reasoning_tokens    BIGINT           NOT NULL,
    cached_input_tokens BIGINT           NOT NULL,
    total_tokens        BIGINT           NOT NULL,
    running_turn_id     TEXT COLLATE "C",
    deleted             BOOLEAN          NOT NULL,
    last_seq            BIGINT           NOT NULL,
    created_at_ms       BIGINT           NOT NULL,
    updated_at_ms       BIGINT           NOT NULL,
    -- Target of the (project_id, conversation_id) foreign keys below, so rows
    -- of a conversation can only belong to the conversation's project.
    UNIQUE (project_id, id)
);

CREATE INDEX conversations_project_updated ON conversations (project_id, updated_at_ms, id);
CREATE INDEX conversations_project_parent  ON conversations (project_id, parent_id, updated_at_ms, id)
    WHERE parent_id IS NOT NULL;

CREATE TABLE conversation_events (
    project_id          TEXT COLLATE "C" NOT NULL,
    conversation_id     TEXT COLLATE "C" NOT NULL,
    seq                 BIGINT           NOT NULL CHECK (seq >= 1),
    at_ms               BIGINT           NOT NULL,
    event_type          TEXT             NOT NULL,
    version             INTEGER          NOT NULL,
    payload             TEXT             NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    FOREIGN KEY (project_id, conversation_id) REFERENCES conversations (project_id, id)
);

CREATE TABLE turns (
    id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id          TEXT COLLATE "C" NOT NULL,
    conversation_id     TEXT COLLATE "C" NOT NULL,
    operation           TEXT             NOT NULL,
    model_id            TEXT             NOT NULL,
    resolved_from       TEXT             NOT NULL,
    llm_config_id       TEXT,
    status              TEXT             NOT NULL,
    error               TEXT,
    input_tokens        BIGINT           NOT NULL,
    output_tokens       BIGINT           NOT NULL,
    reasoning_tokens    BIGINT           NOT NULL,
    cached_input_tokens BIGINT           NOT NULL,
    total_tokens        BIGINT           NOT NULL,
    started_seq         BIGINT           NOT NULL,
    started_at_ms       BIGINT           NOT NULL,
    ended_at_ms         BIGINT,
    -- Crash checkpoint of a running turn's streamed text (not part of the fold).
    partial_text        TEXT,
    partial_at_ms       BIGINT,
    FOREIGN KEY (project_id, conversation_id) REFERENCES conversations (project_id, id)
);

CREATE INDEX turns_project_conversation ON turns (project_id, conversation_id, started_seq);
CREATE INDEX turns_running ON turns (status) WHERE status = 'running';

CREATE TABLE messages (
    id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id          TEXT COLLATE "C" NOT NULL,
    conversation_id     TEXT COLLATE "C" NOT NULL,
    turn_id             TEXT COLLATE "C" NOT NULL,
    role                TEXT             NOT NULL,
    content_json        TEXT             NOT NULL,
    parts_json          TEXT             NOT NULL,
    model_id            TEXT,
    usage_json          TEXT             NOT NULL,
    finish_reason       TEXT,
    seq                 BIGINT           NOT NULL,
    created_at_ms       BIGINT           NOT NULL,
    FOREIGN KEY (project_id, conversation_id) REFERENCES conversations (project_id, id)
);

CREATE INDEX messages_project_conversation ON messages (project_id, conversation_id, seq);
