-- Recording a batch reads the current health of its projects by subject id;
-- the primary key leads with the component, so without this index each read
-- scanned the whole table (quadratic in the fleet: a 100,000-project sweep
-- took 64 s instead of the ~20 s its 10,000-project figures predicted).
CREATE INDEX health_subject ON health (subject_id);
