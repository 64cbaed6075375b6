-- Auth: users and their refresh tokens. A user row and its user event are
-- written in one transaction by the auth service (see auth/src/users.rs).
CREATE TABLE users (
    id             UUID        PRIMARY KEY,
    -- Stored normalised (trimmed, lowercase) by auth; the unique index on
    -- lower(email) keeps it unique case-insensitively even for input that
    -- Postgres lowercases differently.
    email          TEXT        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    display_name   TEXT        NOT NULL,
    -- argon2id PHC string; never leaves this table (not in events, not in responses).
    password_hash  TEXT        NOT NULL,
    role           TEXT        NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    active         BOOLEAN     NOT NULL DEFAULT true,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    deactivated_at TIMESTAMPTZ,
    CHECK (active OR deactivated_at IS NOT NULL)
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Refresh tokens: opaque to clients, stored only as SHA-256 hashes. Every
-- rotation inserts a new row in the same family and marks the old one
-- rotated; presenting a rotated token revokes the whole family.
CREATE TABLE refresh_tokens (
    id         UUID        PRIMARY KEY,
    user_id    UUID        NOT NULL REFERENCES users (id),
    family_id  UUID        NOT NULL,
    token_hash BYTEA       NOT NULL CHECK (octet_length(token_hash) = 32),
    issued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    rotated_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

-- Rate-limit state is kept in memory by each auth process (per client IP and
-- per email), so it needs no table here.
