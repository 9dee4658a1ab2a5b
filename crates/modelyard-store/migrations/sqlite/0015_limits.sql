-- Budgets and rate limits of a project or an API key (issue 21). One row
-- per subject: `project:<project id>` or `key:<key id>`, always of
-- `project_id`. NULL columns are "no limit". Money in nano-USD (1e-9 USD).
CREATE TABLE usage_limits (
    subject              TEXT    NOT NULL PRIMARY KEY,
    project_id           TEXT    NOT NULL REFERENCES projects (id),
    max_cost_nusd        BIGINT,
    max_tokens           BIGINT,
    period               TEXT    CHECK (period IN ('day', 'week', 'month', 'total')),
    requests_per_minute  BIGINT,
    tokens_per_minute    BIGINT,
    max_concurrent       BIGINT,
    updated_at_ms        BIGINT  NOT NULL
);

CREATE INDEX usage_limits_project ON usage_limits (project_id);

-- Shared counters of those limits, one row per subject, metric
-- (`requests`, `tokens` per minute; `budget_tokens`, `budget_cost` per
-- period) and fixed window. `taken` is what replicas leased out of the
-- window (plus what calls spent past their reserve, minus leases given
-- back); `granted` is the size of the last lease, returned by the statement
-- that took it. Runtime state, pruned once a window is long over.
CREATE TABLE limit_counters (
    subject          TEXT    NOT NULL,
    metric           TEXT    NOT NULL,
    window_start_ms  BIGINT  NOT NULL,
    window_end_ms    BIGINT,
    taken            BIGINT  NOT NULL,
    granted          BIGINT  NOT NULL,
    PRIMARY KEY (subject, metric, window_start_ms)
);

CREATE INDEX limit_counters_end ON limit_counters (window_end_ms);
