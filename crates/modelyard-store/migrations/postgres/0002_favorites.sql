-- Favorites: the ordered list of model ids a project has pinned.
-- model_id is stored verbatim (composite "provider/model" ids may hold
-- several slashes; legacy bare ids have none); the "C" collation makes key
-- equality and order byte-wise, as on SQLite. Positions of one project are
-- 0-based and contiguous; the store keeps them so in transactions (there is
-- no UNIQUE (project_id, position): closing a gap shifts rows one by one).
-- Favorites of an offline provider are hidden by the server, never deleted.

CREATE TABLE favorites (
    project_id    TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    model_id      TEXT COLLATE "C" NOT NULL,
    position      INTEGER          NOT NULL CHECK (position >= 0),
    created_at_ms BIGINT           NOT NULL,
    PRIMARY KEY (project_id, model_id)
);

CREATE INDEX favorites_project_position ON favorites (project_id, position);
