-- The event store: append-only, the source of truth.
CREATE TABLE events (
    global_position BIGSERIAL PRIMARY KEY,
    event_id        UUID        NOT NULL,
    stream_id       UUID        NOT NULL,
    stream_type     TEXT        NOT NULL CHECK (stream_type IN ('task', 'user')),
    version         BIGINT      NOT NULL CHECK (version >= 1),
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version >= 1),
    occurred_at     TIMESTAMPTZ NOT NULL,
    actor           UUID        NOT NULL,
    correlation_id  UUID        NOT NULL,
    causation_id    UUID,
    data            JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- Append-only means append-only: rows are never changed or removed.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only';
END;
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- The outbox: one row per event not yet published to Kafka, written in the
-- same transaction as the event and deleted by the relay once Kafka acked it.
CREATE TABLE event_outbox (
    global_position BIGINT PRIMARY KEY REFERENCES events (global_position)
);
