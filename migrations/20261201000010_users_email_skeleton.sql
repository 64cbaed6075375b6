-- Auth: look-alike emails are one account. `email_skeleton` is the
-- confusable skeleton (Unicode TS #39) of the normalised email, computed by
-- auth (auth/src/domain.rs, `Email::skeleton`); its unique index makes a
-- registration whose address only looks like an existing one a 409, as
-- for the same address. Rows from before this column are filled in by
-- auth at start (`users::backfill_skeletons`); NULLs do not conflict.
ALTER TABLE users ADD COLUMN email_skeleton TEXT;
CREATE UNIQUE INDEX users_email_skeleton_key ON users (email_skeleton);
