//! Webhook endpoints: where they are kept (the queries behind `api`),
//! how deliveries reach them (`sender`, behind the SSRF `guard`), and what
//! happens when one is given up on ([`disable`]).
//!
//! An endpoint is a user's own (`project_id` null) or a project's. Who may
//! see and manage it is decided in SQL, by [`VISIBLE`], in every query that
//! reads or changes one, so a caller who may not see an endpoint gets the
//! same "no row" as for one that does not exist.

pub mod api;
pub mod guard;
pub mod sender;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::schedule::derived_id;
use crate::store::{self, NewNotification};

/// Disables `endpoint` if it is enabled: records why, fails its pending
/// deliveries, and tells its owner in the inbox (once per time it is
/// disabled: the notice's id derives from the endpoint and that count).
pub async fn disable(
    conn: &mut PgConnection,
    endpoint: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(Uuid, Option<Uuid>, String, i32)> = sqlx::query_as(
        "UPDATE notifier_webhooks
            SET enabled = FALSE, disabled_at = now(), disabled_reason = left($2, 1000),
                disabled_count = disabled_count + 1, updated_at = now()
          WHERE id = $1 AND enabled
         RETURNING owner_id, project_id, url, disabled_count",
    )
    .bind(endpoint)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((owner, project, url, count)) = row else {
        return Ok(false);
    };
    sqlx::query(
        "UPDATE notifier_deliveries
            SET state = 'failed', last_error = 'the endpoint was disabled'
          WHERE webhook_id = $1 AND state = 'pending'",
    )
    .bind(endpoint)
    .execute(&mut *conn)
    .await?;
    // The notice (which is also e-mailed) names the endpoint by its host:
    // its full URL may hold a token.
    let host = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let notice = NewNotification {
        id: derived_id(&format!("webhook-disabled/{endpoint}/{count}")),
        user_id: owner,
        kind: "webhook_disabled",
        task_id: None,
        project_id: project,
        title: "A webhook was disabled".to_owned(),
        body: format!(
            "Deliveries to your endpoint at {host} failed, so it was disabled (the reason \
             is in this notice's data and on the endpoint). Fix it, then enable it again \
             with PATCH /webhooks/{endpoint}."
        ),
        data: serde_json::json!({ "webhook_id": endpoint, "host": host, "reason": reason }),
        late: false,
    };
    store::insert_notification(conn, &notice).await?;
    metrics::counter!("notifier_webhooks_disabled_total").increment(1);
    tracing::warn!(webhook = %endpoint, reason, "webhook endpoint disabled");
    Ok(true)
}

// ------------------------------------------------------------------ store

/// Who may see and manage endpoint `w` (the caller is `$2`): its owner, for
/// a user's own; the project's owners and admins, for a project's.
pub(crate) const VISIBLE: &str = "((w.project_id IS NULL AND w.owner_id = $2)
     OR (w.project_id IS NOT NULL AND EXISTS (
         SELECT 1 FROM project_members m
          WHERE m.project_id = w.project_id AND m.user_id = $2
            AND m.role IN ('owner', 'admin'))))";

const COLUMNS: &str = "w.id, w.project_id, w.url, w.events, w.enabled, \
     w.disabled_at, w.disabled_reason, w.created_at, w.updated_at";

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A checked new endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub project_id: Option<Uuid>,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
}

/// A checked change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub enabled: Option<bool>,
}

/// `user`'s role in `project`, if they are a member of it.
pub async fn project_role(
    pool: &PgPool,
    project: Uuid,
    user: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2")
        .bind(project)
        .bind(user)
        .fetch_optional(pool)
        .await
}

/// Inserts `new` unless its owner already owns `cap` endpoints (`None`).
/// Creations by one owner are serialised, so the cap holds under
/// concurrent requests.
pub async fn create(
    pool: &PgPool,
    new: &NewWebhook,
    cap: i64,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('notifier_webhooks/' || $1::text, 0))",
    )
    .bind(new.owner_id)
    .execute(&mut *tx)
    .await?;
    let owned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifier_webhooks WHERE owner_id = $1")
            .bind(new.owner_id)
            .fetch_one(&mut *tx)
            .await?;
    if owned >= cap {
        return Ok(None);
    }
    let row = sqlx::query_as(&format!(
        "INSERT INTO notifier_webhooks AS w (id, owner_id, project_id, url, events, secret)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.owner_id)
    .bind(new.project_id)
    .bind(&new.url)
    .bind(&new.events)
    .bind(&new.secret)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(row))
}

/// Endpoint `id`, if `user` may see it.
pub async fn get(pool: &PgPool, user: Uuid, id: Uuid) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifier_webhooks w WHERE w.id = $1 AND {VISIBLE}"
    ))
    .bind(id)
    .bind(user)
    .fetch_optional(pool)
    .await
}

/// Every endpoint `user` may see, oldest first.
pub async fn list(pool: &PgPool, user: Uuid) -> Result<Vec<WebhookRow>, sqlx::Error> {
    // `$1` is unused: the caller is `$2`, as in every query using VISIBLE.
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifier_webhooks w
          WHERE $1::uuid IS NOT NULL AND {VISIBLE} ORDER BY w.created_at, w.id"
    ))
    .bind(user)
    .bind(user)
    .fetch_all(pool)
    .await
}

/// Applies `change` to endpoint `id` if `user` may see it. Enabling clears
/// why it was disabled; disabling by hand records that.
pub async fn update(
    pool: &PgPool,
    user: Uuid,
    id: Uuid,
    change: &WebhookChange,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE notifier_webhooks w
            SET url = COALESCE($3, w.url),
                events = COALESCE($4, w.events),
                secret = COALESCE($5, w.secret),
                enabled = COALESCE($6, w.enabled),
                disabled_at = CASE WHEN $6 IS NULL THEN w.disabled_at
                                   WHEN $6 THEN NULL
                                   WHEN w.enabled THEN now()
                                   ELSE w.disabled_at END,
                disabled_reason = CASE WHEN $6 IS NULL THEN w.disabled_reason
                                       WHEN $6 THEN NULL
                                       WHEN w.enabled THEN 'disabled by hand (enabled: false)'
                                       ELSE w.disabled_reason END,
                updated_at = now()
          WHERE w.id = $1 AND {VISIBLE}
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(user)
    .bind(&change.url)
    .bind(&change.events)
    .bind(&change.secret)
    .bind(change.enabled)
    .fetch_optional(pool)
    .await
}

/// Deletes endpoint `id` (and, by cascade, its deliveries) if `user` may
/// see it.
pub async fn delete(pool: &PgPool, user: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&format!(
        "DELETE FROM notifier_webhooks w WHERE w.id = $1 AND {VISIBLE}"
    ))
    .bind(id)
    .bind(user)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One delivery to an endpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub kind: String,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The columns of a [`DeliveryRow`], from `notifier_deliveries d` joined
/// with `notifier_notifications n`.
const DELIVERY_FROM: &str = "SELECT d.id, d.notification_id, n.kind, d.state, d.attempts,
                d.last_status, d.last_error, d.next_attempt_at, d.first_attempt_at,
                d.last_attempt_at, d.delivered_at, d.created_at
           FROM notifier_deliveries d
           JOIN notifier_notifications n ON n.id = d.notification_id";

/// Up to `limit` deliveries to `endpoint`, newest first, after `after`.
pub async fn deliveries(
    pool: &PgPool,
    endpoint: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as(&format!(
        "{DELIVERY_FROM}
          WHERE d.webhook_id = $1
            AND ($2::timestamptz IS NULL OR (d.created_at, d.id) < ($2, $3))
          ORDER BY d.created_at DESC, d.id DESC
          LIMIT $4"
    ))
    .bind(endpoint)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What asking to deliver again found.
#[derive(Debug)]
pub enum Redelivery {
    /// Pending again, due now: the same `webhook-id` and body, a new retry
    /// window.
    Queued(DeliveryRow),
    /// No such delivery to an endpoint the caller manages.
    NotFound,
    /// The endpoint is disabled: enable it first.
    EndpointDisabled,
    /// Only a `failed` or `skipped` delivery is sent again (`state`).
    NotFailed(String),
}

/// Makes delivery `delivery` of endpoint `endpoint` (which `user` must
/// manage) pending again when it was `failed` or `skipped` and the
/// endpoint is enabled, in one transaction that holds the endpoint (`FOR
/// SHARE`: no disable, change or delete meanwhile) and the delivery (`FOR
/// UPDATE`: a concurrent retry waits and then sees `pending`; the
/// dispatcher skips a locked row). The answer is the row as committed. The
/// attempt count goes on (it is the guard of every outcome's write, and
/// the backoff continues from it); the retry window starts again at the
/// next attempt. A delivery its endpoint no longer wants (a kind it
/// unsubscribed from, say) is claimed and skipped again, with the reason.
pub async fn redeliver(
    pool: &PgPool,
    user: Uuid,
    endpoint: Uuid,
    delivery: Uuid,
) -> Result<Redelivery, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let enabled: Option<bool> = sqlx::query_scalar(&format!(
        "SELECT w.enabled FROM notifier_webhooks w WHERE w.id = $1 AND {VISIBLE} FOR SHARE"
    ))
    .bind(endpoint)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let state: Option<String> = match enabled {
        None => None,
        Some(_) => {
            // The notification first, so that retention cannot delete it
            // (and the delivery with it) once the delivery is pending again.
            sqlx::query(
                "SELECT 1 FROM notifier_notifications
                  WHERE id = (SELECT notification_id FROM notifier_deliveries
                               WHERE id = $1 AND webhook_id = $2)
                  FOR KEY SHARE",
            )
            .bind(delivery)
            .bind(endpoint)
            .execute(&mut *tx)
            .await?;
            sqlx::query_scalar(
                "SELECT state FROM notifier_deliveries
                  WHERE id = $1 AND webhook_id = $2 FOR UPDATE",
            )
            .bind(delivery)
            .bind(endpoint)
            .fetch_optional(&mut *tx)
            .await?
        }
    };
    let answer = match (enabled, state) {
        (Some(true), Some(state)) if state == "failed" || state == "skipped" => {
            sqlx::query(
                "UPDATE notifier_deliveries
                    SET state = 'pending', next_attempt_at = now(), first_attempt_at = NULL
                  WHERE id = $1",
            )
            .bind(delivery)
            .execute(&mut *tx)
            .await?;
            let row: DeliveryRow = sqlx::query_as(&format!("{DELIVERY_FROM} WHERE d.id = $1"))
                .bind(delivery)
                .fetch_one(&mut *tx)
                .await?;
            Redelivery::Queued(row)
        }
        (Some(true), Some(state)) => Redelivery::NotFailed(state),
        (Some(false), Some(_)) => Redelivery::EndpointDisabled,
        _ => Redelivery::NotFound,
    };
    tx.commit().await?;
    Ok(answer)
}
