//! One event → the notifier's state, schedule and event-caused
//! notifications, in the caller's transaction.
//!
//! Notifications an event causes (assignments, project membership) are
//! written only for events at most the catch-up grace old.
//!
//! Task, project and user rows are version-guarded: an event applies only
//! when its stream version is above the row's, so a redelivery changes
//! nothing (notification ids derive from the event id besides).
//!
//! The three streams come from three topics, so their events are read in
//! no fixed order across streams. A project's deletion is therefore kept
//! on the project, not copied onto its tasks: a task whose `task.moved`
//! out of it is read after the `project.deleted` is scheduled under its
//! new project, and one whose `task.created` is read after it never is.

use events::{Event, EventEnvelope, ProjectEvent, StreamType, TaskEvent, TaskStatus, UserEvent};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::schedule::event_notification_id;
use crate::store::{self, NewNotification, TaskRow};

/// What applying an event did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// The kinds of the notifications it created.
    pub created: Vec<&'static str>,
    /// It was at or below the version already applied.
    pub duplicate: bool,
}

/// Applies `env` (already decoded as `event`).
pub async fn apply(
    conn: &mut PgConnection,
    env: &EventEnvelope,
    event: &Event,
    catch_up: chrono::Duration,
) -> Result<Applied, sqlx::Error> {
    match (env.stream_type, event) {
        (StreamType::Task, Event::Task(e)) => apply_task(conn, env, e, catch_up).await,
        (StreamType::Project, Event::Project(e)) => apply_project(conn, env, e, catch_up).await,
        (StreamType::User, Event::User(e)) => apply_user(conn, env, e, catch_up).await,
        _ => Ok(Applied::default()),
    }
}

/// Whether an event is recent enough to tell anyone of: at most
/// `catch_up` old. A notifier deployed on an old log, or a rebuild, does
/// not flood inboxes with the past's assignments.
async fn is_news(
    conn: &mut PgConnection,
    env: &EventEnvelope,
    catch_up: chrono::Duration,
) -> Result<bool, sqlx::Error> {
    Ok(env.occurred_at >= store::now(conn).await? - catch_up)
}

async fn actor_name(conn: &mut PgConnection, actor: Uuid) -> Result<String, sqlx::Error> {
    Ok(store::display_name(conn, actor)
        .await?
        .unwrap_or_else(|| "Someone".to_owned()))
}

async fn apply_task(
    conn: &mut PgConnection,
    env: &EventEnvelope,
    event: &TaskEvent,
    catch_up: chrono::Duration,
) -> Result<Applied, sqlx::Error> {
    let version = i64::try_from(env.version).unwrap_or(i64::MAX);
    let existing = store::task_for_update(conn, env.stream_id).await?;
    let (before, mut task) = match (existing, event) {
        (Some(row), _) if version <= row.version => {
            return Ok(Applied {
                duplicate: true,
                ..Applied::default()
            })
        }
        (None, TaskEvent::Created(c)) => (
            Vec::new(),
            TaskRow {
                task_id: env.stream_id,
                owner_id: c.owner_id,
                project_id: c.project_id,
                assignee_ids: c.assignee_ids.clone(),
                title: c.title.clone(),
                status: c.status,
                due_at: c.due_at,
                deleted: false,
                project_deleted: false,
                version,
            },
        ),
        (None, _) => {
            tracing::warn!(task = %env.stream_id, version, event = %env.event_type,
                "a task event before the task's creation; ignored");
            return Ok(Applied::default());
        }
        (Some(row), _) => (row.assignee_ids.clone(), row),
    };
    task.version = version;
    let mut reschedule = true;
    match event {
        TaskEvent::Created(_) => {}
        TaskEvent::Updated(u) => {
            if let Some(title) = &u.title {
                task.title = title.clone();
            }
            reschedule = false;
        }
        TaskEvent::PriorityChanged(_) => reschedule = false,
        TaskEvent::StatusChanged(s) => task.status = s.to,
        TaskEvent::DueDateChanged(d) => task.due_at = d.due_at,
        TaskEvent::Deleted(_) => task.deleted = true,
        TaskEvent::AssigneesChanged(a) => task.assignee_ids = a.assignee_ids.clone(),
        TaskEvent::Moved(m) => task.project_id = m.to,
        TaskEvent::AttachmentAdded(_) | TaskEvent::AttachmentRemoved(_) => reschedule = false,
    }
    if matches!(event, TaskEvent::Created(_) | TaskEvent::Moved(_)) {
        task.project_deleted = store::project_is_deleted(conn, task.project_id).await?;
    }
    store::save_task(conn, &task).await?;
    if reschedule {
        store::reschedule_task(conn, task.task_id, None, env.occurred_at, catch_up).await?;
    }
    let mut applied = Applied::default();
    let newly: Vec<Uuid> = task
        .assignee_ids
        .iter()
        .filter(|u| !before.contains(u) && **u != env.actor)
        .copied()
        .collect();
    let open =
        !task.facts().deleted && matches!(task.status, TaskStatus::Todo | TaskStatus::InProgress);
    if matches!(
        event,
        TaskEvent::Created(_) | TaskEvent::AssigneesChanged(_)
    ) && open
        && is_news(conn, env, catch_up).await?
    {
        let by = actor_name(conn, env.actor).await?;
        for user in newly {
            let n = NewNotification {
                id: event_notification_id(env.event_id, user),
                user_id: user,
                kind: "assigned",
                task_id: Some(task.task_id),
                project_id: task.project_id,
                title: format!("Assigned: {}", task.title),
                body: format!("{by} assigned you \"{}\".", task.title),
                data: json!({ "assigned_by": env.actor, "due_at": task.due_at }),
                late: false,
            };
            if store::insert_notification(conn, &n).await? {
                applied.created.push("assigned");
            }
        }
    }
    Ok(applied)
}

async fn apply_project(
    conn: &mut PgConnection,
    env: &EventEnvelope,
    event: &ProjectEvent,
    catch_up: chrono::Duration,
) -> Result<Applied, sqlx::Error> {
    let project = env.stream_id;
    let version = i64::try_from(env.version).unwrap_or(i64::MAX);
    let deleted = matches!(event, ProjectEvent::Deleted(_));
    if !store::advance_project(conn, project, version, deleted).await? {
        return Ok(Applied {
            duplicate: true,
            ..Applied::default()
        });
    }
    // The schedule first, whatever the event's age: it is a view of the
    // log. A member added (back) is told about the project's tasks they
    // own or are assigned to again; one removed about none of them.
    match event {
        ProjectEvent::MemberAdded(m) => {
            store::reschedule_user(conn, m.user_id, Some(project), env.occurred_at, catch_up)
                .await?;
        }
        ProjectEvent::MemberRemoved(m) => {
            store::cancel_for_user(conn, m.user_id, Some(project)).await?;
        }
        ProjectEvent::Deleted(_) => store::cancel_project_tasks(conn, project).await?,
        _ => {}
    }
    let mut applied = Applied::default();
    let notification = match event {
        ProjectEvent::MemberAdded(m) if m.user_id != env.actor => {
            let by = actor_name(conn, env.actor).await?;
            Some(NewNotification {
                id: event_notification_id(env.event_id, m.user_id),
                user_id: m.user_id,
                kind: "project_member_added",
                task_id: None,
                project_id: Some(project),
                title: "Added to a project".to_owned(),
                body: format!("{by} added you to a project as {}.", m.role.as_str()),
                data: json!({ "role": m.role, "added_by": env.actor }),
                late: false,
            })
        }
        ProjectEvent::MemberRoleChanged(m) if m.user_id != env.actor => {
            let by = actor_name(conn, env.actor).await?;
            Some(NewNotification {
                id: event_notification_id(env.event_id, m.user_id),
                user_id: m.user_id,
                kind: "project_role_changed",
                task_id: None,
                project_id: Some(project),
                title: "Your project role changed".to_owned(),
                body: format!(
                    "{by} changed your role from {} to {}.",
                    m.from.as_str(),
                    m.to.as_str()
                ),
                data: json!({ "from": m.from, "to": m.to, "changed_by": env.actor }),
                late: false,
            })
        }
        _ => None,
    };
    if let Some(n) = notification {
        if is_news(conn, env, catch_up).await? && store::insert_notification(conn, &n).await? {
            applied.created.push(n.kind);
        }
    }
    Ok(applied)
}

async fn apply_user(
    conn: &mut PgConnection,
    env: &EventEnvelope,
    event: &UserEvent,
    catch_up: chrono::Duration,
) -> Result<Applied, sqlx::Error> {
    let user = env.stream_id;
    let version = i64::try_from(env.version).unwrap_or(i64::MAX);
    if let UserEvent::Registered(r) = event {
        let done = sqlx::query(
            "INSERT INTO notifier_users (user_id, email, display_name, active, version)
             VALUES ($1, $2, $3, TRUE, $4) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user)
        .bind(&r.email)
        .bind(&r.display_name)
        .bind(version)
        .execute(&mut *conn)
        .await?;
        return Ok(Applied {
            duplicate: done.rows_affected() == 0,
            ..Applied::default()
        });
    }
    let current: Option<i64> =
        sqlx::query_scalar("SELECT version FROM notifier_users WHERE user_id = $1 FOR UPDATE")
            .bind(user)
            .fetch_optional(&mut *conn)
            .await?;
    match current {
        Some(v) if version > v => {}
        Some(_) => {
            return Ok(Applied {
                duplicate: true,
                ..Applied::default()
            })
        }
        None => {
            tracing::warn!(%user, version, event = %env.event_type,
                "a user event before the user's registration; ignored");
            return Ok(Applied::default());
        }
    }
    let active = match event {
        UserEvent::Deactivated(_) => Some(false),
        UserEvent::Reactivated(_) => Some(true),
        _ => None,
    };
    sqlx::query(
        "UPDATE notifier_users SET version = $2, active = COALESCE($3, active) WHERE user_id = $1",
    )
    .bind(user)
    .bind(version)
    .bind(active)
    .execute(&mut *conn)
    .await?;
    match active {
        Some(false) => {
            store::cancel_for_user(conn, user, None).await?;
        }
        Some(true) => store::reschedule_user(conn, user, None, env.occurred_at, catch_up).await?,
        None => {}
    }
    Ok(Applied::default())
}
