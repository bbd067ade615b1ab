-- Custody for OAuth pairs, and the record that the store was sealed.
--
-- OAuth tokens take the custody format of the projects' secrets (custody.rs):
-- `1 || nonce || ciphertext` sealed under the master key, or `0 || bytes`
-- in plaintext without one. That is bytes, not text, so the columns are
-- BLOB: SQLite would keep a blob in a TEXT column too, but a column that
-- says TEXT and holds ciphertext misleads whoever reads the schema, and a
-- text value left in it would be a second plaintext form to recognise.
-- SQLite cannot change a column's type, so the table is rebuilt; each
-- plaintext token becomes `0 || its bytes` (the concatenation keeps the
-- zero byte, the cast makes the result a blob).
CREATE TABLE oauth_tokens_sealed (
    connection    TEXT PRIMARY KEY,
    access_token  BLOB NOT NULL,
    refresh_token BLOB NOT NULL,
    expires_at    TEXT,
    seed          TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
INSERT INTO oauth_tokens_sealed (connection, access_token, refresh_token, expires_at, seed, updated_at)
SELECT connection,
       CAST(x'00' || access_token AS BLOB),
       CAST(x'00' || refresh_token AS BLOB),
       expires_at, seed, updated_at
FROM oauth_tokens;
DROP TABLE oauth_tokens;
ALTER TABLE oauth_tokens_sealed RENAME TO oauth_tokens;

-- One row, written once: when a master key was first configured and every
-- secret then still in plaintext (written under custody.allow_plaintext,
-- or an OAuth pair stored without a master key) was sealed in place, in
-- the transaction that wrote this row (store/sealing.rs). From then on a
-- plaintext secret is one glwarden did not write, and it is refused; the
-- sealing never runs again, so it cannot launder such a row.
CREATE TABLE custody_sealed (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    sealed_at TEXT NOT NULL
);
