-- Live (created and not deleted) tasks per owner, kept by command-api in the
-- same transaction as the task.created / task.deleted events, so the cap on
-- live tasks per user (COMMAND_API_MAX_LIVE_TASKS) is checked atomically.
CREATE TABLE live_task_counts (
    owner_id UUID   PRIMARY KEY,
    live     BIGINT NOT NULL CHECK (live >= 0)
);

-- Tasks created before this table existed.
INSERT INTO live_task_counts (owner_id, live)
SELECT coalesce(c.data->>'owner_id', c.actor::text)::uuid, count(*)
  FROM events c
 WHERE c.event_type = 'task.created'
   AND NOT EXISTS (SELECT 1 FROM events d
                    WHERE d.stream_id = c.stream_id AND d.event_type = 'task.deleted')
 GROUP BY 1;
