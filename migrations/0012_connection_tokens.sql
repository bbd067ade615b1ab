-- Each connection's token as GitLab last described it: its kind, id,
-- scopes and expiry, for `glwarden status` and
-- glwarden_connection_token_expiry_timestamp_seconds (issue 17). Written by
-- the sweep's connection step whenever the token's details were read.
CREATE TABLE connection_tokens (
    connection TEXT PRIMARY KEY,
    -- 'access_token' | 'oauth' (config's token_kind)
    kind       TEXT NOT NULL,
    -- GitLab's id of the token (access tokens only)
    token_id   INTEGER,
    -- space-separated, as GitLab listed them
    scopes     TEXT NOT NULL DEFAULT '',
    -- the token stops working at the start of this day (UTC); NULL: no expiry known
    expires_at TEXT,
    read_at    TEXT NOT NULL
);

-- The access token glwarden rotated a connection's token into
-- (`rotate_before_days`), sealed like the OAuth pair (custody), and the
-- rotation under way: `begun_at` is set before GitLab is asked and cleared
-- once its answer (the new token) is stored, so a crash in between is told
-- at the next start ("rotation answer lost") rather than retried: GitLab
-- revokes a token's whole family when a rotated token is rotated again
-- (docs/gitlab-contract.md §13).
CREATE TABLE rotated_tokens (
    connection TEXT PRIMARY KEY,
    -- sha256 of the configured token this descends from: a new configured
    -- token means a person replaced it, and it wins
    seed       TEXT NOT NULL,
    -- sealed; NULL until a rotation's answer was stored
    token      BLOB,
    token_id   INTEGER,
    expires_at TEXT,
    rotated_at TEXT,
    begun_at   TEXT,
    -- GitLab's id of the token being rotated
    begun_from INTEGER,
    -- why the last rotation failed; '' when it did not
    failure    TEXT NOT NULL DEFAULT ''
);
