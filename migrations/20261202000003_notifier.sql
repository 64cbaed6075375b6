-- The notifier's state (issue 15). Every table is the notifier's alone and
-- is folded from the event log, except `notifier_settings` (written by its
-- API) and the schedule and inbox it derives.

-- Users as the log says: who is active, and how to name them.
CREATE TABLE notifier_users (
    user_id      UUID PRIMARY KEY,
    email        TEXT NOT NULL,
    display_name TEXT NOT NULL,
    active       BOOLEAN NOT NULL DEFAULT TRUE,
    version      BIGINT NOT NULL
);

-- Tasks as the log says, with what a schedule needs.
CREATE TABLE notifier_tasks (
    task_id      UUID PRIMARY KEY,
    owner_id     UUID NOT NULL,
    project_id   UUID,
    assignee_ids UUID[] NOT NULL DEFAULT '{}',
    title        TEXT NOT NULL,
    status       TEXT NOT NULL,
    due_at       TIMESTAMPTZ,
    deleted      BOOLEAN NOT NULL DEFAULT FALSE,
    version      BIGINT NOT NULL
);
CREATE INDEX notifier_tasks_project ON notifier_tasks (project_id) WHERE project_id IS NOT NULL;
CREATE INDEX notifier_tasks_owner ON notifier_tasks (owner_id);
CREATE INDEX notifier_tasks_assignees ON notifier_tasks USING GIN (assignee_ids);

-- Per-user preferences; a user without a row has the defaults.
CREATE TABLE notifier_settings (
    user_id                UUID PRIMARY KEY,
    reminder_leads_seconds INT[] NOT NULL DEFAULT '{86400}',
    email_opt_out          TEXT[] NOT NULL DEFAULT '{}',
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (cardinality(reminder_leads_seconds) <= 5),
    CHECK (0 < ALL (reminder_leads_seconds) AND 2592000 >= ALL (reminder_leads_seconds)),
    CHECK (cardinality(email_opt_out) <= 16)
);

-- What will be sent when: one row per (kind, task, user, due time, lead).
-- `id` is the id of the notification it becomes.
CREATE TABLE notifier_schedule (
    id           UUID PRIMARY KEY,
    task_id      UUID NOT NULL,
    user_id      UUID NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('reminder', 'overdue')),
    due_at       TIMESTAMPTZ NOT NULL,
    fire_at      TIMESTAMPTZ NOT NULL,
    lead_seconds INT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'cancelled'))
);
CREATE INDEX notifier_schedule_due ON notifier_schedule (fire_at) WHERE state = 'pending';
CREATE INDEX notifier_schedule_task ON notifier_schedule (task_id) WHERE state = 'pending';
CREATE INDEX notifier_schedule_user ON notifier_schedule (user_id) WHERE state = 'pending';

-- The inbox.
CREATE TABLE notifier_notifications (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    kind       TEXT NOT NULL,
    task_id    UUID,
    project_id UUID,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    data       JSONB NOT NULL DEFAULT '{}',
    late       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    read_at    TIMESTAMPTZ
);
CREATE INDEX notifier_notifications_inbox
    ON notifier_notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifier_notifications_unread
    ON notifier_notifications (user_id, created_at DESC, id DESC) WHERE read_at IS NULL;
