-- glwarden's store: connections, the project inventory, the current health of
-- every component, and the history of state transitions.
--
-- Times are RFC 3339 UTC text. Health keeps the last *definite* state; a
-- transient failure or a blocked check is recorded beside it (`pending`), so
-- that an outage never overwrites what we last knew.

CREATE TABLE connections (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    base_url   TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE projects (
    id            INTEGER PRIMARY KEY,
    connection_id INTEGER NOT NULL REFERENCES connections(id),
    gitlab_id     INTEGER NOT NULL,
    -- path_with_namespace as last seen at GitLab
    path          TEXT NOT NULL,
    -- 'config', 'cli' or 'discovery'
    source        TEXT NOT NULL,
    -- how the config named it ("42" or "group/app"): resolved once, then kept
    config_ref    TEXT,
    webhook_url   TEXT,
    deploy_key_id INTEGER,
    hook_id       INTEGER,
    public_key    TEXT,
    fingerprint   TEXT,
    added_at      TEXT NOT NULL,
    -- set while the project is out of the inventory; its history is kept
    removed_at    TEXT,
    UNIQUE (connection_id, gitlab_id)
);

CREATE INDEX projects_active ON projects (connection_id) WHERE removed_at IS NULL;

CREATE TABLE health (
    -- 'connection' (subject_id = connections.id) or a project component
    -- 'repository' | 'deploy_key' | 'webhook' (subject_id = projects.id)
    component      TEXT NOT NULL,
    subject_id     INTEGER NOT NULL,
    state          TEXT,
    detail         TEXT NOT NULL DEFAULT '',
    since          TEXT,
    consecutive    INTEGER NOT NULL DEFAULT 0,
    last_checked   TEXT,
    -- 'unknown' or 'blocked' while the last check could not decide
    pending        TEXT,
    pending_detail TEXT,
    pending_since  TEXT,
    PRIMARY KEY (component, subject_id)
) WITHOUT ROWID;

CREATE TABLE transitions (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    component  TEXT NOT NULL,
    subject_id INTEGER NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT ''
);

CREATE INDEX transitions_subject ON transitions (component, subject_id, at);
