-- Projects: a third kind of stream.
ALTER TABLE events DROP CONSTRAINT events_stream_type_check;
ALTER TABLE events ADD CONSTRAINT events_stream_type_check
    CHECK (stream_type IN ('task', 'project', 'user'));

-- Who belongs to which live project, with which role: kept by command-api
-- in the same transaction as the project events that change it, so it is
-- always exactly what the committed events say. It is the access
-- authority of both sides: a task write locks the writer's row
-- (FOR SHARE) before deciding, so a removal, a role change, an archive
-- or a delete (which update or delete these rows) waits for writes in
-- flight and every later write sees it; query-api reads it on every
-- request, so a read after a removal's answer sees the removal.
-- `archived` repeats the project's state on each of its rows, so one
-- row lock covers both the role and the archive.
CREATE TABLE project_members (
    project_id UUID    NOT NULL,
    user_id    UUID    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    archived   BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_by_user ON project_members (user_id, project_id);

-- Who is assigned to which task of a project, kept by command-api with
-- the task events that change it, so removing a member finds their
-- assignments without reading every task stream.
CREATE TABLE task_assignments (
    project_id UUID NOT NULL,
    user_id    UUID NOT NULL,
    task_id    UUID NOT NULL,
    PRIMARY KEY (project_id, user_id, task_id)
);
CREATE INDEX task_assignments_by_task ON task_assignments (task_id);
