-- Turn ownership across replicas ([cluster]): the replica that runs a turn
-- holds a lease on it, renewed while it runs; another replica closes a
-- running turn only once its lease has run out. `cancel_requested` is how a
-- replica asks the owner to cancel. Not an event: leases are runtime state.
CREATE TABLE turn_leases (
    turn_id           TEXT    NOT NULL PRIMARY KEY,
    project_id        TEXT    NOT NULL,
    owner             TEXT    NOT NULL,
    lease_until_ms    BIGINT  NOT NULL,
    cancel_requested  INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX turn_leases_owner ON turn_leases (owner);
