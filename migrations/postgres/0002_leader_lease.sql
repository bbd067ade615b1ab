-- Leadership between replicas on one database (issue 16): one row, the
-- lease. A replica leads while it holds an unexpired lease; each takeover
-- gives the lease a new, larger token (the fencing token). Expiry is always
-- judged by the database's clock, `clock_timestamp()` (`now()` is the
-- transaction's start and would judge a long transaction by a stale time).
CREATE TABLE leader_lease (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    holder      TEXT,
    token       BIGINT NOT NULL DEFAULT 0,
    acquired_at TIMESTAMPTZ,
    renewed_at  TIMESTAMPTZ,
    expires_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
INSERT INTO leader_lease (id) VALUES (1);

-- Fencing: a leader's connections carry its token (session setting
-- `glwarden.fence`). Writes to what only the leader may change (the repair
-- journal, OAuth pairs, the key and hook a project owns) are refused unless
-- that token is the lease's and the lease has not expired. The check locks
-- the lease row FOR SHARE until the writing transaction ends, so a
-- takeover (an UPDATE of that row) waits for the write in flight, and every
-- later write under the old token is refused: no write of a deposed leader
-- lands after a new one took over.
CREATE FUNCTION glwarden_require_fence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM leader_lease
     WHERE id = 1
       AND token::text = current_setting('glwarden.fence', true)
       AND expires_at > clock_timestamp()
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'glwarden: % on % refused: this replica does not hold the leader''s lease (fencing token %)',
            TG_OP, TG_TABLE_NAME, coalesce(nullif(current_setting('glwarden.fence', true), ''), 'none')
            USING ERRCODE = 'GW001';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER repair_journal_fenced BEFORE INSERT OR UPDATE OR DELETE ON repair_journal
    FOR EACH STATEMENT EXECUTE FUNCTION glwarden_require_fence();
CREATE TRIGGER oauth_tokens_fenced BEFORE INSERT OR UPDATE OR DELETE ON oauth_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION glwarden_require_fence();
-- The key and hook a project owns change only through a repair (the
-- inventory's upsert leaves these columns alone).
CREATE TRIGGER projects_owned_fenced BEFORE UPDATE OF deploy_key_id, hook_id, hook_token ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION glwarden_require_fence();
