-- The current OAuth pair of each OAuth connection. GitLab rotates the refresh
-- token on every use, so after the first refresh the configured refresh token
-- is dead and this row is the only valid one. `seed` is the SHA-256 of the
-- configured refresh token the row descends from: a different configured
-- token means a person re-authorized, and the configuration wins again.
-- The file is 0600; encryption of secrets at rest comes with key custody.
CREATE TABLE oauth_tokens (
    connection    TEXT PRIMARY KEY,
    access_token  TEXT NOT NULL,
    refresh_token TEXT NOT NULL,
    expires_at    TEXT,
    seed          TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
