-- Attachments (issue 16): the bytes live in the object store; the task's
-- events say which attachments a task has. command-api keeps, beside the
-- streams, one row per attachment it knows of: pending (a presigned upload
-- handed out, not yet completed) or completed (its `task.attachment_added`
-- is in the stream). The rows bound uploads per task and bytes per user,
-- pending ones included, and say which objects a deletion leaves behind.
CREATE TABLE attachments (
    attachment_id     uuid PRIMARY KEY,
    task_id           uuid NOT NULL,
    uploaded_by       uuid NOT NULL,
    filename          text NOT NULL,
    content_type      text NOT NULL,
    size              bigint NOT NULL CHECK (size >= 0),
    sha256            text NOT NULL,
    completed         boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- When nothing sent to the presigned upload URL can still arrive: its
    -- expiry plus a grace (COMMAND_API_ATTACHMENT_UPLOAD_GRACE_SECONDS),
    -- since a PUT accepted just before the expiry can finish later and the
    -- store checks the expiry by its own clock. An abandoned upload is
    -- expired, and an object deleted, only after it.
    settles_at        timestamptz NOT NULL
);

CREATE INDEX attachments_by_task ON attachments (task_id);
CREATE INDEX attachments_by_user ON attachments (uploaded_by);
CREATE INDEX attachments_pending ON attachments (created_at) WHERE NOT completed;

-- Objects to delete from the store, enqueued in the transaction that made
-- them unreachable (the delete event, the project delete, the cleanup of
-- an abandoned upload); a loop deletes them and then the row, retrying
-- while the store is down. `not_before`: an upload that has not settled
-- might yet arrive, so its object is deleted once it has. A queued object
-- counts toward its uploader's bytes (`uploaded_by`, `size`) until it is
-- deleted, so cancelling or removing and uploading again cannot store more
-- than the cap (the orphan sweep's rows name no uploader).
CREATE TABLE attachment_gc (
    object_key  text PRIMARY KEY,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    not_before  timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    uploaded_by uuid,
    size        bigint NOT NULL DEFAULT 0
);

CREATE INDEX attachment_gc_due ON attachment_gc (not_before);
CREATE INDEX attachment_gc_by_user ON attachment_gc (uploaded_by) WHERE uploaded_by IS NOT NULL;
