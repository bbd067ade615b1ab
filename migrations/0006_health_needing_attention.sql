-- After every sweep the repair pass counts the broken projects and reads the
-- components that may need a repair. Both read a handful of rows, but without
-- these indexes each scanned the whole health table: 0.5-1.1 s of a
-- 100,000-project sweep. Each index's condition is written exactly as in its
-- query (store/summary.rs), which is what lets SQLite use a partial index.
CREATE INDEX health_broken ON health (subject_id)
WHERE state NOT IN ('ok', 'healthy', 'expiring');

CREATE INDEX health_repairable ON health (subject_id)
WHERE state NOT IN ('ok', 'healthy') OR detail LIKE '%duplicate hooks%';
