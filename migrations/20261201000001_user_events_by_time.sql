-- Every API follows account changes (deactivation, role changes) by reading
-- the user events recorded in the last few seconds, several times a second
-- (auth/src/accounts.rs). This keeps that read off the task events.
CREATE INDEX events_user_recorded_at_idx ON events (recorded_at) WHERE stream_type = 'user';
