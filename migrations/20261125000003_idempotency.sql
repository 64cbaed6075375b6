-- Idempotency keys of command-api writes. A key is scoped to the user, the
-- method and the path it was sent with; the row is written in the same
-- transaction as the command's events, so a committed row always holds the
-- first response and a retry replays it instead of appending again.
CREATE TABLE idempotency_keys (
    user_id          UUID        NOT NULL,
    method           TEXT        NOT NULL,
    path             TEXT        NOT NULL,
    idempotency_key  TEXT        NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    -- SHA-256 of the request body: the same key with another body is refused.
    request_hash     BYTEA       NOT NULL CHECK (octet_length(request_hash) = 32),
    -- NULL only inside the transaction that claimed the key; committed rows
    -- always carry the response.
    response_status  SMALLINT,
    response_headers JSONB,
    response_body    BYTEA,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, method, path, idempotency_key)
);

-- Keys are kept at least 24 hours; the service deletes older ones by this index.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
