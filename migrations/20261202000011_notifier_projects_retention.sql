-- Project streams as the notifier has applied them.
--
-- `version` makes each project event apply once, as task and user events
-- already do. `deleted` replaces marking a deleted project's tasks
-- deleted: a task moved out of the project before the delete, whose
-- `task.moved` (another topic) is read after the `project.deleted`, is
-- then scheduled under its new project instead of being lost.
CREATE TABLE notifier_projects (
    project_id UUID PRIMARY KEY,
    version    BIGINT NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE
);

-- Retention (`notifier::retention`) deletes by age.
CREATE INDEX notifier_notifications_created ON notifier_notifications (created_at);
CREATE INDEX notifier_schedule_finished
    ON notifier_schedule (fire_at) WHERE state <> 'pending';
