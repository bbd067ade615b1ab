-- The status page at 100,000 projects (benches/scale.rs, "status page"):
-- the overview's list of what needs attention scanned the whole health
-- table (77 ms on SQLite, 149 ms on PostgreSQL), and a project's page found
-- its project by scanning every path. The condition is written exactly as
-- in store/attention.rs, which is what lets SQLite use a partial index.
CREATE INDEX health_attention ON health (subject_id)
WHERE pending IS NOT NULL OR state NOT IN ('ok', 'healthy');

CREATE INDEX projects_path ON projects (connection_id, path);
