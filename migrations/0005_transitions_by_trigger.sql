-- Recording a sweep folds each observation into its health row in the
-- upsert itself (store::record), without reading the rows first; these
-- triggers write the history as the state changes, so the store still keeps
-- one transitions row per change of the last definite state.
CREATE TRIGGER health_first_state AFTER INSERT ON health
WHEN NEW.state IS NOT NULL
BEGIN
    INSERT INTO transitions (at, component, subject_id, from_state, to_state, detail)
    VALUES (NEW.last_checked, NEW.component, NEW.subject_id, NULL, NEW.state, NEW.detail);
END;

CREATE TRIGGER health_state_changed AFTER UPDATE OF state ON health
WHEN NEW.state IS NOT OLD.state
BEGIN
    INSERT INTO transitions (at, component, subject_id, from_state, to_state, detail)
    VALUES (NEW.last_checked, NEW.component, NEW.subject_id, OLD.state, NEW.state, NEW.detail);
END;
