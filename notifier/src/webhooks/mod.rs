//! Webhook endpoints: where they are kept, and what happens when one is
//! given up on.

use sqlx::PgConnection;
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
    let notice = NewNotification {
        id: derived_id(&format!("webhook-disabled/{endpoint}/{count}")),
        user_id: owner,
        kind: "webhook_disabled",
        task_id: None,
        project_id: project,
        title: "A webhook was disabled".to_owned(),
        body: format!(
            "Deliveries to {url} kept failing, so the endpoint was disabled. \
             Fix it, then enable it again with PATCH /webhooks/{endpoint}."
        ),
        data: serde_json::json!({ "webhook_id": endpoint, "url": url, "reason": reason }),
        late: false,
    };
    store::insert_notification(conn, &notice).await?;
    metrics::counter!("notifier_webhooks_disabled_total").increment(1);
    tracing::warn!(webhook = %endpoint, reason, "webhook endpoint disabled");
    Ok(true)
}
