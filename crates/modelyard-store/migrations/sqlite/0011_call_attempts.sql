-- Routing (retries and fallbacks): one call row per attempt. `attempt` counts
-- the attempts of one request from 1; `route` is the route the request named
-- (NULL when it named one deployment).
ALTER TABLE llm_calls ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE llm_calls ADD COLUMN route TEXT;
