-- Repairs: key material in custody, a journal of repair intents (written
-- before each step, so that a crash at any point is resumed on start), the
-- audit trail of repairs and renames, and the storm guard's pause.

-- Sealed (custody.rs) private deploy key and webhook secret token.
ALTER TABLE projects ADD COLUMN private_key BLOB;
ALTER TABLE projects ADD COLUMN hook_token BLOB;
-- Fingerprint of the key the configuration last named for the project: the
-- configured key is applied when it changes, and otherwise glwarden's own
-- (possibly rotated) key stands.
ALTER TABLE projects ADD COLUMN config_fingerprint TEXT;

CREATE TABLE repair_journal (
    id         INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    component  TEXT NOT NULL,
    action     TEXT NOT NULL,
    -- the last step completed: 'intent', 'created', 'confirmed', 'stored'
    step       TEXT NOT NULL,
    -- JSON: ids and fingerprints (no secrets)
    data       TEXT NOT NULL DEFAULT '{}',
    -- sealed secret the repair is installing (a new private key or hook token)
    secret     BLOB,
    cause      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX repair_journal_project ON repair_journal (project_id);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    project_id INTEGER,
    component  TEXT NOT NULL,
    -- e.g. 'regenerate_deploy_key', 'recreate_webhook', 'follow_rename', 'plan', 'key_read'
    action     TEXT NOT NULL,
    cause      TEXT NOT NULL DEFAULT '',
    before     TEXT NOT NULL DEFAULT '',
    after      TEXT NOT NULL DEFAULT '',
    -- 'ok', 'failed: ...', 'planned', 'skipped: ...'
    outcome    TEXT NOT NULL
);

CREATE INDEX events_project ON events (project_id, at);

-- One row: whether automatic repairs are paused by the storm guard.
CREATE TABLE repair_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    paused       INTEGER NOT NULL DEFAULT 0,
    reason       TEXT NOT NULL DEFAULT '',
    since        TEXT
);
INSERT INTO repair_state (id, paused) VALUES (1, 0);
