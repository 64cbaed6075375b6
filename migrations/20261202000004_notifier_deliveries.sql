-- The notifier's outgoing channels (issue 15): webhook endpoints, and one
-- delivery row per (notification, channel, endpoint), written in the
-- transaction that writes the notification, so a notification that exists
-- has its deliveries and a cause can never make two.

-- Webhook endpoints: a user's own (`project_id` NULL), or a project's,
-- managed by its owners and admins. `owner_id` is who created it and is
-- told when it is disabled.
CREATE TABLE notifier_webhooks (
    id              UUID PRIMARY KEY,
    owner_id        UUID NOT NULL,
    project_id      UUID,
    url             TEXT NOT NULL CHECK (length(url) <= 2048),
    events          TEXT[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 16),
    -- `whsec_` + base64 of the key; never returned after creation.
    secret          TEXT NOT NULL CHECK (length(secret) <= 256),
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_at     TIMESTAMPTZ,
    disabled_reason TEXT,
    -- How many times it was disabled: the disable notice's id derives from it.
    disabled_count  INT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifier_webhooks_owner ON notifier_webhooks (owner_id) WHERE project_id IS NULL;
CREATE INDEX notifier_webhooks_project ON notifier_webhooks (project_id) WHERE project_id IS NOT NULL;

-- One row per notification and channel (and endpoint). `id` is the
-- webhook's `webhook-id`; e-mail's `Message-ID` derives from the
-- notification id. A row being sent is `sending` with `next_attempt_at`
-- at the end of its lease: a sender that died leaves it to be claimed
-- again once the lease is over.
CREATE TABLE notifier_deliveries (
    id               UUID PRIMARY KEY,
    notification_id  UUID NOT NULL REFERENCES notifier_notifications (id) ON DELETE CASCADE,
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
    webhook_id       UUID REFERENCES notifier_webhooks (id) ON DELETE CASCADE,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sending', 'delivered', 'failed', 'skipped')),
    attempts         INT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    first_attempt_at TIMESTAMPTZ,
    last_attempt_at  TIMESTAMPTZ,
    delivered_at     TIMESTAMPTZ,
    -- The last answer: an HTTP status, or an SMTP reply code.
    last_status      INT,
    -- Why the last attempt failed, or why the row was skipped (bounded).
    last_error       TEXT CHECK (length(last_error) <= 1024),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((channel = 'webhook') = (webhook_id IS NOT NULL))
);
CREATE INDEX notifier_deliveries_due
    ON notifier_deliveries (channel, next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX notifier_deliveries_notification ON notifier_deliveries (notification_id);
CREATE INDEX notifier_deliveries_webhook
    ON notifier_deliveries (webhook_id, created_at DESC, id DESC) WHERE webhook_id IS NOT NULL;

-- Events the notifier could not apply (a constraint the event breaks, say)
-- after retrying them alone: set aside so that they stall nobody, counted
-- (`notifier_dead_letters_total`) and logged. Re-applied by hand, or by
-- `notifier rebuild` once the cause is fixed.
CREATE TABLE notifier_dead_letters (
    topic          TEXT NOT NULL,
    kafka_partition INT NOT NULL,
    kafka_offset   BIGINT NOT NULL,
    error          TEXT NOT NULL,
    payload        BYTEA,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
