-- As migrations/0012_connection_tokens.sql.
CREATE TABLE connection_tokens (
    connection TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    token_id   BIGINT,
    scopes     TEXT NOT NULL DEFAULT '',
    expires_at DATE,
    read_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE rotated_tokens (
    connection TEXT PRIMARY KEY,
    seed       TEXT NOT NULL,
    token      BYTEA,
    token_id   BIGINT,
    expires_at DATE,
    rotated_at TIMESTAMPTZ,
    begun_at   TIMESTAMPTZ,
    begun_from BIGINT,
    failure    TEXT NOT NULL DEFAULT ''
);

-- One rotation at a time across replicas: only the leader's fenced
-- connections may write it (migrations/postgres/0002_leader_lease.sql).
CREATE TRIGGER rotated_tokens_fenced BEFORE INSERT OR UPDATE OR DELETE ON rotated_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION glwarden_require_fence();
