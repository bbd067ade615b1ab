-- What was glwarden's, so that a repair deletes or rewrites only that: a
-- deploy key whose key material glwarden held for the project, a hook whose
-- URL one of glwarden's webhook URL templates gives for it. An id alone is
-- not enough: ids pointed at the wrong key or hook (another instance, a
-- restored backup) must never destroy someone else's.

-- Every key glwarden held for a project (its `projects.fingerprint`, now or
-- before). Filled by triggers, so every path that writes a key is covered.
-- The triggers test with NOT EXISTS rather than INSERT OR IGNORE: a trigger's
-- conflict clause gives way to that of the statement that fired it, and the
-- inventory's upsert would turn a duplicate into an error.
CREATE TABLE owned_keys (
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (project_id, fingerprint)
) WITHOUT ROWID;

INSERT INTO owned_keys (project_id, fingerprint)
    SELECT id, fingerprint FROM projects WHERE fingerprint IS NOT NULL;

CREATE TRIGGER owned_keys_on_insert AFTER INSERT ON projects
    WHEN NEW.fingerprint IS NOT NULL
BEGIN
    INSERT INTO owned_keys (project_id, fingerprint)
        SELECT NEW.id, NEW.fingerprint
        WHERE NOT EXISTS (SELECT 1 FROM owned_keys WHERE project_id = NEW.id AND fingerprint = NEW.fingerprint);
END;

CREATE TRIGGER owned_keys_on_update AFTER UPDATE OF fingerprint ON projects
    WHEN NEW.fingerprint IS NOT NULL
BEGIN
    INSERT INTO owned_keys (project_id, fingerprint)
        SELECT NEW.id, NEW.fingerprint
        WHERE NOT EXISTS (SELECT 1 FROM owned_keys WHERE project_id = NEW.id AND fingerprint = NEW.fingerprint);
END;

-- Every webhook URL template glwarden was configured with (`expect.webhook_url`
-- at each start and reload, and per-project `webhook_url`s): a handful of rows
-- however large the fleet, where a list of URLs would hold one per project.
CREATE TABLE hook_url_templates (
    template TEXT PRIMARY KEY
) WITHOUT ROWID;

INSERT OR IGNORE INTO hook_url_templates (template)
    SELECT DISTINCT webhook_url FROM projects WHERE webhook_url IS NOT NULL;

CREATE TRIGGER hook_url_templates_on_insert AFTER INSERT ON projects
    WHEN NEW.webhook_url IS NOT NULL
BEGIN
    INSERT INTO hook_url_templates (template)
        SELECT NEW.webhook_url
        WHERE NOT EXISTS (SELECT 1 FROM hook_url_templates WHERE template = NEW.webhook_url);
END;

CREATE TRIGGER hook_url_templates_on_update AFTER UPDATE OF webhook_url ON projects
    WHEN NEW.webhook_url IS NOT NULL
BEGIN
    INSERT INTO hook_url_templates (template)
        SELECT NEW.webhook_url
        WHERE NOT EXISTS (SELECT 1 FROM hook_url_templates WHERE template = NEW.webhook_url);
END;
