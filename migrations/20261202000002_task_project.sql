-- Where a task is now: the project named by its last `task.created` or
-- `task.moved` event (`task.created` before schema 3 names none), as text;
-- NULL for a personal task. The command side reads it before taking a
-- task's lock, query-api when it checks a consistency token: one
-- definition for both, served by the (stream_id, version) index.
CREATE FUNCTION task_project(task UUID) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN event_type = 'task.moved' THEN data->>'to'
                ELSE data->>'project_id' END
      FROM events
     WHERE stream_id = task AND event_type IN ('task.created', 'task.moved')
     ORDER BY version DESC
     LIMIT 1
$$;
