-- An upload URL that has expired can still land an object: a PUT the store
-- accepted just before the expiry finishes later, and the store checks the
-- expiry by its own clock. `settles_at` (the URL's expiry plus a grace,
-- COMMAND_API_ATTACHMENT_UPLOAD_GRACE_SECONDS) is when nothing sent to the
-- URL can still arrive: an abandoned upload is expired, and an object
-- deleted, only after it.
ALTER TABLE attachments RENAME COLUMN upload_expires_at TO settles_at;

-- A queued object counts toward its uploader's bytes until it is deleted
-- from the store, so cancelling or removing and uploading again cannot
-- store more than the cap.
ALTER TABLE attachment_gc
    ADD COLUMN uploaded_by uuid,
    ADD COLUMN size bigint NOT NULL DEFAULT 0;

CREATE INDEX attachment_gc_by_user ON attachment_gc (uploaded_by) WHERE uploaded_by IS NOT NULL;
