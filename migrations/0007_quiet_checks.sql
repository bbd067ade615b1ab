-- A healthy fleet answers each sweep as it answered the last one. Folding
-- those answers into `health` changed only each row's count and time of the
-- last check, yet rewrote three rows per project every sweep: at 100,000
-- projects a third of the daemon's CPU. A project whose answers were last
-- written in full keeps a digest of them here; a later check with the same
-- digest ("quiet") only counts itself on this one narrow row (store/quiet.rs).
--
-- A project has a row here only while each of its health rows holds,
-- without a pending condition, the answer the digest describes; any other
-- write to its health rows first folds the quiet checks back and drops it.
CREATE TABLE settled (
    project_id   INTEGER PRIMARY KEY,
    digest       TEXT NOT NULL,
    -- The quiet checks since the digest was written, counted up from 2^23
    -- (read them through `quiet`): SQLite stores 0 and 1 in no bytes and
    -- 2 to 127 in one, so a count from 0 grew its row, and a row that grows
    -- splits the page it sits on; the rows are written packed, so at
    -- 100,000 projects the second quiet check grew the file by 1.4 MB.
    -- From 2^23 the count takes 4 bytes until 2^31.
    tally        INTEGER NOT NULL DEFAULT 8388608,
    -- the last check, quiet or not: set from the start for the same reason
    -- (its text keeps its length but for an instant whose nanoseconds end
    -- in zeros, which chrono writes shorter)
    last_checked TEXT NOT NULL
);

-- Store::record is the one writer of health and keeps the rule above; should
-- a project's health rows ever be deleted, its digest goes with them.
CREATE TRIGGER health_deleted AFTER DELETE ON health
WHEN OLD.component != 'connection'
BEGIN
    DELETE FROM settled WHERE project_id = OLD.subject_id;
END;

CREATE VIEW quiet AS
SELECT project_id, tally - 8388608 AS checks, last_checked FROM settled;

-- Health as readers see it: the stored rows with their quiet checks added.
CREATE VIEW health_now AS
SELECT h.component, h.subject_id, h.state, h.detail, h.since,
       h.consecutive + COALESCE(q.checks, 0) AS consecutive,
       COALESCE(q.last_checked, h.last_checked) AS last_checked,
       h.pending, h.pending_detail, h.pending_since
FROM health h
LEFT JOIN quiet q ON h.component != 'connection' AND q.project_id = h.subject_id;
