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

-- The tasks of projects, kept by command-api in the same transaction as
-- the task events that change them (create, move, assignees, delete), so
-- the command side finds a project's tasks (a project delete frees their
-- owners' live-task slots) and a member's assignments (a removal appends
-- task.assignees_changed to each) without reading every task stream.
-- Personal tasks have no row; a deleted task or a deleted project's tasks
-- lose theirs. One index only (every create in a project inserts here):
-- task writes learn a task's project from its stream, not from this table.
CREATE TABLE project_tasks (
    project_id   UUID   NOT NULL,
    task_id      UUID   NOT NULL,
    -- The creator (`task.created`'s owner_id): whose live-task slot it holds.
    owner_id     UUID   NOT NULL,
    assignee_ids UUID[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (project_id, task_id)
);
