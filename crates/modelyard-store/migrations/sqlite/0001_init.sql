-- Modelyard store schema, SQLite flavour.
-- Timestamps are unix milliseconds (BIGINT), ids are TEXT (UUIDv7 strings
-- chosen by the caller), JSON is TEXT. Booleans are INTEGER 0/1.

CREATE TABLE projects (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    created_at_ms BIGINT  NOT NULL
);

INSERT INTO projects (id, name, created_at_ms)
VALUES ('default', 'default', CAST(strftime('%s', 'now') AS INTEGER) * 1000);

CREATE TABLE llm_sessions (
    id                TEXT    NOT NULL PRIMARY KEY,
    project_id        TEXT    NOT NULL REFERENCES projects (id),
    operation         TEXT    NOT NULL,
    parent_session_id TEXT,
    conversation_id   TEXT,
    created_at_ms     BIGINT  NOT NULL,
    -- Target of the (project_id, session_id) foreign key of llm_calls, so a
    -- call can only belong to a session of its own project.
    UNIQUE (project_id, id)
);

CREATE INDEX llm_sessions_project_created ON llm_sessions (project_id, created_at_ms);

CREATE TABLE llm_calls (
    id                   TEXT    NOT NULL PRIMARY KEY,
    project_id           TEXT    NOT NULL REFERENCES projects (id),
    session_id           TEXT    NOT NULL,
    model_id             TEXT    NOT NULL,
    provider             TEXT    NOT NULL,
    upstream_model       TEXT    NOT NULL,
    stream               INTEGER NOT NULL CHECK (stream IN (0, 1)),
    request_json         TEXT    NOT NULL,
    response_text        TEXT,
    reasoning_text       TEXT,
    tool_calls_json      TEXT,
    finish_reason        TEXT,
    prompt_tokens        BIGINT,
    completion_tokens    BIGINT,
    reasoning_tokens     BIGINT,
    cached_prompt_tokens BIGINT,
    total_tokens         BIGINT,
    sent_at_ms           BIGINT  NOT NULL,
    first_token_at_ms    BIGINT,
    completed_at_ms      BIGINT,
    http_status          INTEGER,
    error                TEXT,
    FOREIGN KEY (project_id, session_id) REFERENCES llm_sessions (project_id, id)
);

CREATE INDEX llm_calls_project_id      ON llm_calls (project_id, id);
CREATE INDEX llm_calls_project_model   ON llm_calls (project_id, model_id, id);
CREATE INDEX llm_calls_project_session ON llm_calls (project_id, session_id, id);
