-- The outbox is a queue: a row per event, deleted by the relay moments
-- after its insert.
--
-- The foreign key to `events` made every append take a row lock on the
-- event it had just inserted (and queue a trigger per row) to prove what
-- the append's single statement guarantees by construction: the outbox row
-- is inserted from the event's own RETURNING clause.
ALTER TABLE event_outbox DROP CONSTRAINT event_outbox_global_position_fkey;

-- The relay vacuums the outbox itself (events::relay::VACUUM_AFTER_DELETES);
-- autovacuum is the backstop, without a threshold proportional to a table
-- whose live size is about zero.
ALTER TABLE event_outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
