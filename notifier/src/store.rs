//! Postgres: the notifier's state folded from the log, the schedule, the
//! inbox and the settings. Every function here takes the transaction (or
//! pool) it runs in; the consumer, the scheduler and the API decide where
//! transactions begin and end.

use chrono::{DateTime, Utc};
use events::TaskStatus;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::schedule::{self, Slot, TaskFacts};

/// The lead time a user who never chose one gets: one reminder a day ahead.
pub const DEFAULT_LEADS: [i32; 1] = [86_400];

/// A notification about to enter an inbox.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: &'static str,
    pub task_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub title: String,
    pub body: String,
    pub data: Value,
    pub late: bool,
}

/// Inserts a notification unless one with its id exists, with its
/// deliveries; whether it was new.
pub async fn insert_notification(
    conn: &mut PgConnection,
    n: &NewNotification,
) -> Result<bool, sqlx::Error> {
    Ok(!insert_notifications(conn, std::slice::from_ref(n))
        .await?
        .is_empty())
}

/// Inserts the notifications whose ids do not exist yet, with their
/// deliveries ([`crate::delivery::enqueue`]), in two statements plus the
/// deliveries'; the ids of those that were new.
pub async fn insert_notifications(
    conn: &mut PgConnection,
    all: &[NewNotification],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO notifier_notifications
             (id, user_id, kind, task_id, project_id, title, body, data, late)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[],
                              $6::text[], $7::text[], $8::jsonb[], $9::bool[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(all.iter().map(|n| n.id).collect::<Vec<_>>())
    .bind(all.iter().map(|n| n.user_id).collect::<Vec<_>>())
    .bind(all.iter().map(|n| n.kind).collect::<Vec<_>>())
    .bind(all.iter().map(|n| n.task_id).collect::<Vec<_>>())
    .bind(all.iter().map(|n| n.project_id).collect::<Vec<_>>())
    .bind(all.iter().map(|n| n.title.as_str()).collect::<Vec<_>>())
    .bind(all.iter().map(|n| n.body.as_str()).collect::<Vec<_>>())
    .bind(all.iter().map(|n| n.data.clone()).collect::<Vec<_>>())
    .bind(all.iter().map(|n| n.late).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let new: Vec<&NewNotification> = all.iter().filter(|n| inserted.contains(&n.id)).collect();
    crate::delivery::enqueue(conn, &new).await?;
    Ok(inserted)
}

/// The database's clock: the time of the transaction.
pub async fn now(conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(conn).await
}

/// SQL: the project of the task `t` is deleted. A deleted project's tasks
/// are not marked deleted themselves (a `task.moved` out of it may be read
/// later); every query that asks whether a task is live asks this too.
const PROJECT_DELETED: &str = "EXISTS (SELECT 1 FROM notifier_projects p
                 WHERE p.project_id = t.project_id AND p.deleted)";

/// A task row as the notifier keeps it.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub task_id: Uuid,
    pub owner_id: Uuid,
    pub project_id: Option<Uuid>,
    pub assignee_ids: Vec<Uuid>,
    pub title: String,
    pub status: TaskStatus,
    pub due_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    /// Its project is deleted (read with the row, never saved: a
    /// `task.moved` out of the project brings the task back).
    pub project_deleted: bool,
    pub version: i64,
}

impl TaskRow {
    pub fn facts(&self) -> TaskFacts {
        TaskFacts {
            task_id: self.task_id,
            owner_id: self.owner_id,
            assignee_ids: self.assignee_ids.clone(),
            status: self.status,
            due_at: self.due_at,
            deleted: self.deleted || self.project_deleted,
        }
    }
}

/// The task's row, locked for the rest of the transaction.
pub async fn task_for_update(
    conn: &mut PgConnection,
    task_id: Uuid,
) -> Result<Option<TaskRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT t.owner_id, t.project_id, t.assignee_ids, t.title, t.status, t.due_at,
                t.deleted, t.version, {PROJECT_DELETED} AS project_deleted
           FROM notifier_tasks t WHERE t.task_id = $1 FOR UPDATE OF t"
    ))
    .bind(task_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get("status")?;
    Ok(Some(TaskRow {
        task_id,
        owner_id: row.try_get("owner_id")?,
        project_id: row.try_get("project_id")?,
        assignee_ids: row.try_get("assignee_ids")?,
        title: row.try_get("title")?,
        // Written by `save_task` from a `TaskStatus`; an unknown value reads
        // as done, which schedules nothing.
        status: status.parse().unwrap_or(TaskStatus::Done),
        due_at: row.try_get("due_at")?,
        deleted: row.try_get("deleted")?,
        project_deleted: row.try_get("project_deleted")?,
        version: row.try_get("version")?,
    }))
}

pub async fn save_task(conn: &mut PgConnection, t: &TaskRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifier_tasks
             (task_id, owner_id, project_id, assignee_ids, title, status, due_at, deleted, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (task_id) DO UPDATE SET
             owner_id = EXCLUDED.owner_id, project_id = EXCLUDED.project_id,
             assignee_ids = EXCLUDED.assignee_ids, title = EXCLUDED.title,
             status = EXCLUDED.status, due_at = EXCLUDED.due_at,
             deleted = EXCLUDED.deleted, version = EXCLUDED.version",
    )
    .bind(t.task_id)
    .bind(t.owner_id)
    .bind(t.project_id)
    .bind(&t.assignee_ids)
    .bind(&t.title)
    .bind(t.status.as_str())
    .bind(t.due_at)
    .bind(t.deleted)
    .bind(t.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// A user's display name, if the log has told of them.
pub async fn display_name(
    conn: &mut PgConnection,
    user: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT display_name FROM notifier_users WHERE user_id = $1")
        .bind(user)
        .fetch_optional(conn)
        .await
}

/// Brings one task's pending schedule in line with the task, for all its
/// recipients or only `only_user`: rows no longer wanted are cancelled,
/// wanted rows are inserted (a cancelled one comes back), each only if
/// [`schedule::worth_inserting`] at `scheduled_at`.
pub async fn reschedule_task(
    conn: &mut PgConnection,
    task_id: Uuid,
    only_user: Option<Uuid>,
    scheduled_at: DateTime<Utc>,
    catch_up: chrono::Duration,
) -> Result<(), sqlx::Error> {
    let task = task_for_update(conn, task_id).await?;
    let mut ideal: Vec<Slot> = Vec::new();
    if let Some(task) = &task {
        let facts = task.facts();
        let users: Vec<Uuid> = facts
            .recipients()
            .into_iter()
            .filter(|u| only_user.is_none_or(|only| only == *u))
            .collect();
        let inactive: Vec<Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM notifier_users WHERE user_id = ANY($1) AND NOT active",
        )
        .bind(&users)
        .fetch_all(&mut *conn)
        .await?;
        let leads: Vec<(Uuid, Vec<i32>)> = sqlx::query_as(
            "SELECT user_id, reminder_leads_seconds FROM notifier_settings WHERE user_id = ANY($1)",
        )
        .bind(&users)
        .fetch_all(&mut *conn)
        .await?;
        for user in users.iter().filter(|u| !inactive.contains(u)) {
            let theirs = leads
                .iter()
                .find(|(u, _)| u == user)
                .map(|(_, l)| l.as_slice())
                .unwrap_or(&DEFAULT_LEADS);
            ideal.extend(schedule::ideal(&facts, *user, theirs));
        }
    }
    let wanted: Vec<Uuid> = ideal.iter().map(|s| s.id).collect();
    sqlx::query(
        "UPDATE notifier_schedule SET state = 'cancelled'
          WHERE task_id = $1 AND state = 'pending' AND NOT (id = ANY($2))
            AND ($3::uuid IS NULL OR user_id = $3)",
    )
    .bind(task_id)
    .bind(&wanted)
    .bind(only_user)
    .execute(&mut *conn)
    .await?;
    let now = now(conn).await?;
    for slot in ideal
        .iter()
        .filter(|s| schedule::worth_inserting(s, scheduled_at, now, catch_up))
    {
        sqlx::query(
            "INSERT INTO notifier_schedule
                 (id, task_id, user_id, kind, due_at, fire_at, lead_seconds)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET state = 'pending'
              WHERE notifier_schedule.state = 'cancelled'",
        )
        .bind(slot.id)
        .bind(slot.task_id)
        .bind(slot.user_id)
        .bind(slot.kind.as_str())
        .bind(slot.due_at)
        .bind(slot.fire_at)
        .bind(slot.lead_seconds)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Reschedules every pending task `user` is told about, on every task or
/// on `project`'s (after a change of their lead times, their reactivation,
/// or their joining the project again).
pub async fn reschedule_user(
    conn: &mut PgConnection,
    user: Uuid,
    project: Option<Uuid>,
    scheduled_at: DateTime<Utc>,
    catch_up: chrono::Duration,
) -> Result<(), sqlx::Error> {
    let tasks: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT t.task_id FROM notifier_tasks t
          WHERE NOT t.deleted AND NOT {PROJECT_DELETED}
            AND t.due_at IS NOT NULL AND t.status IN ('todo', 'in_progress')
            AND ($1 = ANY(t.assignee_ids) OR (cardinality(t.assignee_ids) = 0 AND t.owner_id = $1))
            AND ($2::uuid IS NULL OR t.project_id = $2)
          ORDER BY t.task_id"
    ))
    .bind(user)
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    for task in tasks {
        reschedule_task(conn, task, Some(user), scheduled_at, catch_up).await?;
    }
    Ok(())
}

/// Cancels what is pending for `user`, on every task or on `project`'s.
pub async fn cancel_for_user(
    conn: &mut PgConnection,
    user: Uuid,
    project: Option<Uuid>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifier_schedule s SET state = 'cancelled'
          WHERE s.user_id = $1 AND s.state = 'pending'
            AND ($2::uuid IS NULL OR s.task_id IN
                 (SELECT task_id FROM notifier_tasks WHERE project_id = $2))",
    )
    .bind(user)
    .bind(project)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Records a project event at `version` (and, for `project.deleted`, the
/// deletion). False when the project's row is already at or above it: the
/// event was applied before and changes nothing now.
pub async fn advance_project(
    conn: &mut PgConnection,
    project: Uuid,
    version: i64,
    deleted: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO notifier_projects (project_id, version, deleted) VALUES ($1, $2, $3)
         ON CONFLICT (project_id) DO UPDATE
            SET version = EXCLUDED.version,
                deleted = notifier_projects.deleted OR EXCLUDED.deleted
          WHERE notifier_projects.version < EXCLUDED.version",
    )
    .bind(project)
    .bind(version)
    .bind(deleted)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `project` (a task's, if any) is deleted.
pub async fn project_is_deleted(
    conn: &mut PgConnection,
    project: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    let Some(project) = project else {
        return Ok(false);
    };
    let deleted: Option<bool> =
        sqlx::query_scalar("SELECT deleted FROM notifier_projects WHERE project_id = $1")
            .bind(project)
            .fetch_optional(conn)
            .await?;
    Ok(deleted.unwrap_or(false))
}

/// A deleted project takes its tasks with it (no task event says so):
/// what is pending for them is cancelled, and [`advance_project`] has
/// recorded the deletion, which keeps them from being scheduled again
/// unless a `task.moved` takes one out.
pub async fn cancel_project_tasks(
    conn: &mut PgConnection,
    project: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifier_schedule SET state = 'cancelled'
          WHERE state = 'pending'
            AND task_id IN (SELECT task_id FROM notifier_tasks WHERE project_id = $1)",
    )
    .bind(project)
    .execute(conn)
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ firing

/// What one scheduler round did.
#[derive(Debug, Default)]
pub struct Fired {
    /// The kinds of the notifications created.
    pub sent: Vec<&'static str>,
    /// Rows found no longer pending and cancelled.
    pub cancelled: u64,
    /// How long past its time the oldest row claimed was, in seconds.
    pub lag_seconds: f64,
    /// Rows claimed (a full batch means more may be due).
    pub claimed: usize,
    /// Rows left pending because the notifier has not applied every event
    /// of their task or user yet.
    pub behind: usize,
}

/// Claims up to `batch` due rows (`FOR UPDATE SKIP LOCKED`, so two
/// notifiers never fire one row), re-checks each against the task as it is
/// now, and in the same transaction either inserts its notification and
/// marks it `sent`, or marks it `cancelled`.
///
/// "As it is now" is the event store's word, not only the notifier's
/// folded copy, which lags the log (after a restart, or while Kafka or the
/// relay is behind): a row whose task or user stream has events the
/// notifier has not applied yet stays pending until it has. Project
/// membership is read from `project_members`, the command side's authority,
/// so someone who left a project is never told about its tasks. A row
/// older than `catch_up`, or a reminder whose due time has passed (its
/// overdue notice says more), is cancelled.
///
/// The tasks are locked `FOR SHARE` before the rows are claimed: a
/// consumer transaction changing one of them (completing it, moving its
/// due time) commits first, and the re-check reads what it committed.
/// Tasks are locked before schedule rows, as the consumer locks them.
pub async fn fire_due(
    pool: &PgPool,
    batch: i64,
    late_after: std::time::Duration,
    catch_up: std::time::Duration,
) -> Result<Fired, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let tasks: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT task_id FROM
             (SELECT task_id FROM notifier_schedule
               WHERE state = 'pending' AND fire_at <= now()
               ORDER BY fire_at LIMIT $1) due",
    )
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    if tasks.is_empty() {
        tx.commit().await?;
        return Ok(Fired::default());
    }
    sqlx::query("SELECT 1 FROM notifier_tasks WHERE task_id = ANY($1) ORDER BY task_id FOR SHARE")
        .bind(&tasks)
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(&format!(
        "SELECT s.id, s.task_id, s.user_id, s.kind, s.due_at, s.fire_at, s.lead_seconds,
                EXTRACT(EPOCH FROM (now() - s.fire_at))::float8 AS lag,
                (COALESCE(t.version, 0) >= COALESCE(
                     (SELECT max(e.version) FROM events e WHERE e.stream_id = s.task_id), 0)
                 AND COALESCE(u.version, 0) >= COALESCE(
                     (SELECT max(e.version) FROM events e WHERE e.stream_id = s.user_id), 0))
                    AS caught_up,
                (t.task_id IS NOT NULL AND NOT t.deleted
                 AND NOT {PROJECT_DELETED}
                 AND s.fire_at >= now() - make_interval(secs => $3)
                 AND (s.kind = 'overdue' OR s.due_at > now())
                 AND (t.project_id IS NULL OR EXISTS (
                      SELECT 1 FROM project_members m
                       WHERE m.project_id = t.project_id AND m.user_id = s.user_id))
                 AND t.status IN ('todo', 'in_progress')
                 AND t.due_at = s.due_at
                 AND COALESCE(u.active, TRUE)
                 AND CASE WHEN cardinality(t.assignee_ids) > 0
                          THEN s.user_id = ANY(t.assignee_ids)
                          ELSE s.user_id = t.owner_id END) AS still_pending,
                t.title, t.project_id
           FROM notifier_schedule s
           LEFT JOIN notifier_tasks t ON t.task_id = s.task_id
           LEFT JOIN notifier_users u ON u.user_id = s.user_id
          WHERE s.state = 'pending' AND s.fire_at <= now() AND s.task_id = ANY($2)
          ORDER BY s.fire_at
          LIMIT $1
          FOR UPDATE OF s SKIP LOCKED"
    ))
    .bind(batch)
    .bind(&tasks)
    .bind(catch_up.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let mut fired = Fired {
        claimed: rows.len(),
        ..Fired::default()
    };
    let mut sent_ids = Vec::new();
    let mut cancelled_ids = Vec::new();
    let mut to_insert: Vec<NewNotification> = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = row.try_get("id")?;
        let lag: f64 = row.try_get("lag")?;
        fired.lag_seconds = fired.lag_seconds.max(lag);
        if !row
            .try_get::<Option<bool>, _>("caught_up")?
            .unwrap_or(false)
        {
            // The next round sees it again, once the consumer has caught up.
            fired.behind += 1;
            continue;
        }
        if !row
            .try_get::<Option<bool>, _>("still_pending")?
            .unwrap_or(false)
        {
            cancelled_ids.push(id);
            continue;
        }
        let kind: String = row.try_get("kind")?;
        let due_at: DateTime<Utc> = row.try_get("due_at")?;
        let fire_at: DateTime<Utc> = row.try_get("fire_at")?;
        let lead: i32 = row.try_get("lead_seconds")?;
        let title: String = row
            .try_get::<Option<String>, _>("title")?
            .unwrap_or_default();
        let due = due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (kind, heading, body) = if kind == "overdue" {
            (
                "overdue",
                format!("Overdue: {title}"),
                format!("\"{title}\" was due at {due} and is not done."),
            )
        } else {
            (
                "reminder",
                format!("Reminder: {title}"),
                format!("\"{title}\" is due at {due}."),
            )
        };
        let n = NewNotification {
            id,
            user_id: row.try_get("user_id")?,
            kind,
            task_id: Some(row.try_get("task_id")?),
            project_id: row.try_get("project_id")?,
            title: heading,
            body,
            data: serde_json::json!({
                "due_at": due_at,
                "fire_at": fire_at,
                "lead_seconds": lead,
            }),
            late: lag > late_after.as_secs_f64(),
        };
        to_insert.push(n);
        sent_ids.push(id);
    }
    let inserted = insert_notifications(&mut tx, &to_insert).await?;
    fired.sent = to_insert
        .iter()
        .filter(|n| inserted.contains(&n.id))
        .map(|n| n.kind)
        .collect();
    for (state, ids) in [("sent", &sent_ids), ("cancelled", &cancelled_ids)] {
        if !ids.is_empty() {
            sqlx::query("UPDATE notifier_schedule SET state = $1 WHERE id = ANY($2)")
                .bind(state)
                .bind(ids)
                .execute(&mut *tx)
                .await?;
        }
    }
    fired.cancelled = cancelled_ids.len() as u64;
    tx.commit().await?;
    Ok(fired)
}

// ------------------------------------------------------------------- inbox

/// A notification as the inbox holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub kind: String,
    pub task_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub title: String,
    pub body: String,
    pub data: Value,
    pub late: bool,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// Up to `limit` of `user`'s notifications, newest first, after `after`
/// (the last one of the previous page: created_at, id).
pub async fn inbox_page(
    pool: &PgPool,
    user: Uuid,
    unread_only: bool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as(
        "SELECT id, kind, task_id, project_id, title, body, data, late, created_at, read_at
           FROM notifier_notifications
          WHERE user_id = $1
            AND (NOT $2 OR read_at IS NULL)
            AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
          ORDER BY created_at DESC, id DESC
          LIMIT $5",
    )
    .bind(user)
    .bind(unread_only)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One delivery of a notification, as the inbox shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub notification_id: Uuid,
    pub channel: String,
    pub webhook_id: Option<Uuid>,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The deliveries of `user`'s notifications `ids` that `user` may see: the
/// e-mails, and the webhook deliveries to endpoints they may manage.
pub async fn deliveries_of(
    pool: &PgPool,
    user: Uuid,
    ids: &[Uuid],
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let visible = crate::webhooks::VISIBLE;
    sqlx::query_as(&format!(
        "SELECT d.notification_id, d.channel, d.webhook_id, d.state, d.attempts,
                d.last_status, d.last_error, d.next_attempt_at, d.delivered_at
           FROM notifier_deliveries d
           JOIN notifier_notifications n ON n.id = d.notification_id AND n.user_id = $2
           LEFT JOIN notifier_webhooks w ON w.id = d.webhook_id
          WHERE d.notification_id = ANY($1)
            AND (d.channel = 'email' OR {visible})
          ORDER BY d.channel, d.webhook_id"
    ))
    .bind(ids)
    .bind(user)
    .fetch_all(pool)
    .await
}

pub async fn unread_count(pool: &PgPool, user: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM notifier_notifications WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user)
    .fetch_one(pool)
    .await
}

/// Marks one of `user`'s notifications read (once: the first time stays);
/// `false` when `user` has no notification with this id.
pub async fn mark_read(pool: &PgPool, user: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifier_notifications SET read_at = COALESCE(read_at, now())
          WHERE id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn mark_all_read(pool: &PgPool, user: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifier_notifications SET read_at = now()
          WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

// ---------------------------------------------------------------- settings

/// A user's notification settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsRow {
    pub leads: Vec<i32>,
    pub email_opt_out: Vec<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

pub async fn settings(pool: &PgPool, user: Uuid) -> Result<SettingsRow, sqlx::Error> {
    let row: Option<(Vec<i32>, Vec<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT reminder_leads_seconds, email_opt_out, updated_at
           FROM notifier_settings WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((leads, email_opt_out, updated_at)) => SettingsRow {
            leads,
            email_opt_out,
            updated_at: Some(updated_at),
        },
        None => SettingsRow {
            leads: DEFAULT_LEADS.to_vec(),
            email_opt_out: Vec::new(),
            updated_at: None,
        },
    })
}

/// Replaces `user`'s settings and reschedules their pending reminders, in
/// one transaction.
pub async fn put_settings(
    pool: &PgPool,
    user: Uuid,
    leads: &[i32],
    email_opt_out: &[String],
    catch_up: chrono::Duration,
) -> Result<SettingsRow, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let updated_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO notifier_settings (user_id, reminder_leads_seconds, email_opt_out, updated_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (user_id) DO UPDATE SET
             reminder_leads_seconds = EXCLUDED.reminder_leads_seconds,
             email_opt_out = EXCLUDED.email_opt_out,
             updated_at = EXCLUDED.updated_at
         RETURNING updated_at",
    )
    .bind(user)
    .bind(leads)
    .bind(email_opt_out)
    .fetch_one(&mut *tx)
    .await?;
    let now = now(&mut tx).await?;
    reschedule_user(&mut tx, user, None, now, catch_up).await?;
    tx.commit().await?;
    Ok(SettingsRow {
        leads: leads.to_vec(),
        email_opt_out: email_opt_out.to_vec(),
        updated_at: Some(updated_at),
    })
}
