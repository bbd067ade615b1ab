-- What a check finds beside a component's state is kept as data, not as
-- words in its detail (rewording a message must not change a decision):
--   finding          belongs to the definite state (kept, like detail,
--                    while a check is undecided): `duplicate_hooks`, a
--                    healthy webhook with other hooks to the same URL.
--   pending_finding  belongs to the pending condition: `not_found_once`,
--                    a first 404 of the repository, confirmed (or not) by
--                    the next check.
ALTER TABLE health ADD COLUMN finding TEXT;
ALTER TABLE health ADD COLUMN pending_finding TEXT;

-- What the words said until now (src/probe.rs and src/sweep/project.rs
-- wrote exactly these).
UPDATE health SET finding = 'duplicate_hooks'
WHERE component = 'webhook' AND state IS NOT NULL AND detail LIKE '%duplicate hooks to the same URL%';
UPDATE health SET pending_finding = 'not_found_once'
WHERE component = 'repository' AND pending = 'unknown'
  AND pending_detail LIKE 'GitLab answers 404 for the project; not_found if the next check agrees%';

DROP VIEW health_now;
CREATE VIEW health_now AS
SELECT h.component, h.subject_id, h.state, h.detail, h.since,
       h.consecutive + COALESCE(q.checks, 0) AS consecutive,
       COALESCE(q.last_checked, h.last_checked) AS last_checked,
       h.pending, h.pending_detail, h.pending_since,
       h.finding, h.pending_finding
FROM health h
LEFT JOIN quiet q ON h.component != 'connection' AND q.project_id = h.subject_id;

-- The repair pass's candidates (store/summary.rs, REPAIR_CANDIDATES): the
-- condition is written exactly as in the query, or SQLite will not use it.
DROP INDEX health_repairable;
CREATE INDEX health_repairable ON health (subject_id)
WHERE state NOT IN ('ok', 'healthy') OR finding IS NOT NULL;
