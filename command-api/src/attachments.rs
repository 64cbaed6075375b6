//! Attachments on the write side: the rows beside the task streams
//! (`attachments`: pending and completed uploads; `attachment_gc`: objects
//! to delete), the limits, and the two loops that clean up after clients
//! (abandoned uploads) and after deletions (objects nobody can reach).
//!
//! The flow: `POST /tasks/{id}/attachments` decides `Action::Attach` (the
//! caller may write the task) and inserts a pending row under the limits,
//! in the task's write transaction; the client PUTs the bytes straight to
//! the store; `…/complete` HEADs the object (size, checksum), then appends
//! `task.attachment_added` and marks the row completed in one transaction.
//! A removal, a cancelled upload, a task delete or a project delete moves
//! the rows into `attachment_gc` in the transaction that decides it, so an
//! object is deleted only once nothing can list it, and always eventually:
//! once its upload has settled (the URL's expiry plus a grace), when
//! nothing sent to the URL can still arrive and put it back.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::TaskEvent;
use objects::ObjectStore;
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use objects::attachment_key as object_key;

pub const MAX_FILENAME_BYTES: usize = 255;
pub const DEFAULT_MAX_BYTES: u64 = 25 * 1024 * 1024;
pub const DEFAULT_MAX_PER_TASK: u32 = 100;
pub const DEFAULT_MAX_BYTES_PER_USER: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_MAX_PENDING_PER_USER: u32 = 20;
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_UPLOAD_GRACE: Duration = Duration::from_secs(900);
pub const DEFAULT_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Allowed unless configured otherwise: documents, images, archives and
/// logs. HTML and SVG are allowed because downloads are always served as
/// attachments (`Content-Disposition: attachment`), never rendered inline.
pub const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "text/markdown",
    "text/html",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/svg+xml",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/json",
    "application/xml",
    "application/octet-stream",
];

/// The bounds of attachments (`COMMAND_API_ATTACHMENT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes per file.
    pub max_bytes: u64,
    /// Attachments per task, pending uploads included.
    pub max_per_task: u32,
    /// Bytes per uploader over all tasks, pending uploads included.
    pub max_bytes_per_user: u64,
    /// Uploads one user may have pending at once, over all tasks: one
    /// member cannot hold a task's slots with uploads never completed.
    pub max_pending_per_user: u32,
    /// Content types accepted, lowercase, without parameters.
    pub content_types: BTreeSet<String>,
    /// A pending upload older than this (and settled) is removed.
    pub upload_ttl: Duration,
    /// How long after its URL expired an upload may still land: a PUT
    /// accepted just before the expiry finishing later, or the store's
    /// clock behind ours. An upload settles at its URL's expiry plus this.
    pub upload_grace: Duration,
    /// How often the bucket is swept for objects no row names; `None`:
    /// never (a bucket shared with another deployment must not be swept).
    pub sweep_every: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_per_task: DEFAULT_MAX_PER_TASK,
            max_bytes_per_user: DEFAULT_MAX_BYTES_PER_USER,
            max_pending_per_user: DEFAULT_MAX_PENDING_PER_USER,
            content_types: DEFAULT_CONTENT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            upload_ttl: DEFAULT_UPLOAD_TTL,
            upload_grace: DEFAULT_UPLOAD_GRACE,
            sweep_every: Some(DEFAULT_SWEEP_EVERY),
        }
    }
}

/// A limit an upload would pass, named as the problem names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    PerTask(u32),
    PerUser(u64),
    PendingPerUser(u32),
}

/// Why an attachment write could not be done beside its event.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("attachment limit reached")]
    Limit(Limit),
    /// The pending upload is gone (cleaned up after its time) or unknown.
    #[error("no such upload")]
    NoSuchUpload,
}

/// A filename as stored: no path separators, no control characters, not
/// empty, not `.` or `..`, at most 255 bytes of UTF-8.
pub fn check_filename(name: &str) -> Result<(), String> {
    if name.is_empty() || name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err("must not be `.` or `..`".into());
    }
    if name.len() > MAX_FILENAME_BYTES {
        return Err("must be at most 255 bytes of UTF-8".into());
    }
    if name.contains(['/', '\\']) {
        return Err("must not contain a path separator".into());
    }
    if name.trim() != name {
        return Err("must not begin or end with a space".into());
    }
    if name.ends_with('.') {
        return Err("must not end with a dot".into());
    }
    // Control and format characters: a right-to-left override or a
    // zero-width space can make `invoice\u{202e}fdp.exe` read as a PDF.
    service::text::check_line(name)
}

/// An upload as declared by the client, checked against the limits that
/// need no database.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingUpload {
    pub attachment_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    /// When nothing sent to the upload URL can still arrive.
    pub settles_at: DateTime<Utc>,
    pub max_per_task: u32,
    pub max_bytes_per_user: u64,
    pub max_pending_per_user: u32,
}

/// A pending or completed attachment row.
#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub attachment_id: Uuid,
    pub task_id: Uuid,
    pub uploaded_by: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub completed: bool,
}

/// First key of the per-user advisory lock that serialises one uploader's
/// quota checks: "atch".
const USER_LOCK_CLASS: i32 = 0x6174_6368;

/// Records a pending upload, in the task's write transaction (which holds
/// the task's lock, so the per-task count cannot race), after taking the
/// uploader's lock for the per-user sums. The uploader's bytes include
/// their objects queued for deletion: until an object is gone from the
/// store, it is stored.
pub async fn insert_pending(
    tx: &mut PgConnection,
    task_id: Uuid,
    uploader: Uuid,
    upload: &PendingUpload,
) -> Result<Result<(), AttachmentError>, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(USER_LOCK_CLASS)
        .bind(crate::tasks::task_lock_key(uploader))
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM attachments WHERE task_id = $1) AS on_task,
                (SELECT coalesce(sum(size), 0)::bigint FROM attachments WHERE uploaded_by = $2)
                + (SELECT coalesce(sum(size), 0)::bigint FROM attachment_gc WHERE uploaded_by = $2)
                  AS bytes,
                (SELECT count(*) FROM attachments WHERE uploaded_by = $2 AND NOT completed) AS pending",
    )
    .bind(task_id)
    .bind(uploader)
    .fetch_one(&mut *tx)
    .await?;
    let on_task: i64 = row.try_get("on_task")?;
    let bytes: i64 = row.try_get("bytes")?;
    let pending: i64 = row.try_get("pending")?;
    if pending >= i64::from(upload.max_pending_per_user) {
        return Ok(Err(AttachmentError::Limit(Limit::PendingPerUser(
            upload.max_pending_per_user,
        ))));
    }
    if on_task >= i64::from(upload.max_per_task) {
        return Ok(Err(AttachmentError::Limit(Limit::PerTask(
            upload.max_per_task,
        ))));
    }
    let size = i64::try_from(upload.size).unwrap_or(i64::MAX);
    let cap = i64::try_from(upload.max_bytes_per_user).unwrap_or(i64::MAX);
    if bytes.saturating_add(size) > cap {
        return Ok(Err(AttachmentError::Limit(Limit::PerUser(
            upload.max_bytes_per_user,
        ))));
    }
    sqlx::query(
        "INSERT INTO attachments (attachment_id, task_id, uploaded_by, filename, content_type,
                                  size, sha256, settles_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(upload.attachment_id)
    .bind(task_id)
    .bind(uploader)
    .bind(&upload.filename)
    .bind(&upload.content_type)
    .bind(size)
    .bind(&upload.sha256)
    .bind(upload.settles_at)
    .execute(&mut *tx)
    .await?;
    Ok(Ok(()))
}

/// The attachment row `attachment_id` of `task_id`, pending or completed.
pub async fn find(
    pool: &PgPool,
    task_id: Uuid,
    attachment_id: Uuid,
) -> Result<Option<AttachmentRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT attachment_id, task_id, uploaded_by, filename, content_type, size, sha256, completed
           FROM attachments WHERE attachment_id = $1 AND task_id = $2",
    )
    .bind(attachment_id)
    .bind(task_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(AttachmentRow {
            attachment_id: r.try_get("attachment_id")?,
            task_id: r.try_get("task_id")?,
            uploaded_by: r.try_get("uploaded_by")?,
            filename: r.try_get("filename")?,
            content_type: r.try_get("content_type")?,
            size: r.try_get::<i64, _>("size")?.max(0) as u64,
            sha256: r.try_get("sha256")?,
            completed: r.try_get("completed")?,
        })
    })
    .transpose()
}

/// Keeps the rows what the task's appended `events` say, in their
/// transaction: an added attachment's row is completed (it must still be
/// pending: one removed by the cleanup meanwhile refuses the event); a
/// removed one, or every one of a deleted task, goes to `attachment_gc`.
pub async fn after_append(
    tx: &mut PgConnection,
    task_id: Uuid,
    events: &[TaskEvent],
) -> Result<Result<(), AttachmentError>, sqlx::Error> {
    for event in events {
        match event {
            TaskEvent::AttachmentAdded(a) => {
                let done = sqlx::query(
                    "UPDATE attachments SET completed = true
                      WHERE attachment_id = $1 AND task_id = $2 AND NOT completed",
                )
                .bind(a.attachment_id)
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(Err(AttachmentError::NoSuchUpload));
                }
            }
            TaskEvent::AttachmentRemoved(r) => {
                collect(tx, "attachment_id = $1", r.attachment_id).await?;
            }
            TaskEvent::Deleted(_) => {
                collect(tx, "task_id = $1", task_id).await?;
            }
            _ => {}
        }
    }
    Ok(Ok(()))
}

/// The statement that moves the rows matching `filter` to
/// `attachment_gc` (keys as [`objects::attachment_key`] makes them, with
/// the uploader and size, which count until the object is gone). Every
/// object is deleted once its upload has settled (at once when it has):
/// before, a PUT could put the object back after an earlier delete, and
/// nothing would ever remove it.
fn collect_sql(filter: &str) -> String {
    format!(
        "WITH gone AS (DELETE FROM attachments WHERE {filter}
                        RETURNING task_id, attachment_id, settles_at, uploaded_by, size)
         INSERT INTO attachment_gc (object_key, not_before, uploaded_by, size)
         SELECT 'tasks/' || task_id || '/' || attachment_id,
                greatest(now(), settles_at), uploaded_by, size
           FROM gone
         ON CONFLICT (object_key) DO NOTHING"
    )
}

/// Moves the rows matching `filter` (on `$1`) to `attachment_gc`.
async fn collect(tx: &mut PgConnection, filter: &str, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(&collect_sql(filter))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// For a project delete, in its transaction: the objects of the tasks in
/// `task_ids` (the project's, which vanish with it) go to `attachment_gc`.
pub async fn collect_tasks(tx: &mut PgConnection, task_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if task_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(&collect_sql("task_id = ANY($1)"))
        .bind(task_ids)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Cancels the pending upload `attachment_id` of `task_id`, in the task's
/// write transaction: its row goes, and its object (if the client sent
/// one) is deleted once the upload has settled.
pub async fn cancel_pending(
    tx: &mut PgConnection,
    task_id: Uuid,
    attachment_id: Uuid,
) -> Result<Result<(), AttachmentError>, sqlx::Error> {
    let done = sqlx::query(&collect_sql(
        "attachment_id = $1 AND task_id = $2 AND NOT completed",
    ))
    .bind(attachment_id)
    .bind(task_id)
    .execute(&mut *tx)
    .await?;
    match done.rows_affected() {
        0 => Ok(Err(AttachmentError::NoSuchUpload)),
        _ => Ok(Ok(())),
    }
}

/// How often the loops look for work.
pub const CLEANUP_TICK: Duration = Duration::from_secs(1);
/// Objects deleted per round.
const GC_BATCH: i64 = 100;

/// Until `shutdown`: pending uploads older than `ttl` (and settled) move
/// to `attachment_gc`; the objects queued there are deleted from the
/// store, then their rows. A store that is down keeps the rows for the
/// next round (with a growing count of attempts), so nothing is lost.
pub async fn clean_up_until(
    pool: PgPool,
    store: ObjectStore,
    ttl: Duration,
    tick: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = expire_pending(&pool, ttl).await {
            tracing::warn!(error = %e, "attachments: could not expire abandoned uploads");
        }
        if let Err(e) = delete_queued(&pool, &store).await {
            tracing::warn!(error = %e, "attachments: could not read the deletion queue");
        }
    }
}

/// Moves abandoned uploads (older than `ttl`, and settled) to the deletion queue.
async fn expire_pending(pool: &PgPool, ttl: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(&collect_sql(
        "NOT completed AND created_at < now() - make_interval(secs => $1) AND settles_at < now()",
    ))
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?;
    if done.rows_affected() > 0 {
        metrics::counter!("attachment_uploads_expired_total").increment(done.rows_affected());
    }
    Ok(done.rows_affected())
}

/// Deletes the due objects of the queue; each row goes once its object is gone.
async fn delete_queued(pool: &PgPool, store: &ObjectStore) -> Result<(), sqlx::Error> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT object_key FROM attachment_gc WHERE not_before <= now()
          ORDER BY not_before LIMIT $1",
    )
    .bind(GC_BATCH)
    .fetch_all(pool)
    .await?;
    for key in keys {
        match store.delete(&key).await {
            Ok(()) => {
                sqlx::query("DELETE FROM attachment_gc WHERE object_key = $1")
                    .bind(&key)
                    .execute(pool)
                    .await?;
                metrics::counter!("attachment_objects_deleted_total").increment(1);
            }
            Err(e) => {
                // Retried on a later round; back off a little per attempt.
                sqlx::query(
                    "UPDATE attachment_gc
                        SET attempts = attempts + 1,
                            not_before = now() + make_interval(secs => least(attempts + 1, 30))
                      WHERE object_key = $1",
                )
                .bind(&key)
                .execute(pool)
                .await?;
                tracing::warn!(error = %e, key, "attachments: object deletion failed; will retry");
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Until `shutdown`, every `every`: [`sweep_orphans`], logging what it
/// found or why it could not run (the next round tries again).
pub async fn sweep_orphans_until(
    pool: PgPool,
    store: ObjectStore,
    every: Duration,
    settle: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match sweep_orphans(&pool, &store, settle, &shutdown).await {
            Ok(0) => {}
            Ok(found) => tracing::info!(found, "attachments: orphaned objects queued for deletion"),
            Err(e) => tracing::warn!(error = %e, "attachments: could not sweep the bucket"),
        }
    }
}

/// Pages of 1,000 keys one sweep reads at most (the rest waits for the
/// next round).
const MAX_SWEEP_PAGES: usize = 10_000;

/// Why a sweep stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] objects::StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The attachment `{task}/{attachment}` a key names, in the one form
/// [`objects::attachment_key`] makes (anything else is not ours).
fn attachment_of(key: &str) -> Option<Uuid> {
    let (task, attachment) = key.strip_prefix("tasks/")?.split_once('/')?;
    let (task, attachment) = (
        Uuid::parse_str(task).ok()?,
        Uuid::parse_str(attachment).ok()?,
    );
    (objects::attachment_key(task, attachment) == key).then_some(attachment)
}

/// Queues for deletion every object under `tasks/` that no attachment row
/// names and that is older than `settle` (the URL lifetime plus the
/// grace: no upload can still be arriving). The bucket must be this
/// deployment's alone: another database's objects are named by no row here. Whatever path left it behind
/// (a PUT that landed after its object was deleted, a store that kept an
/// object its DELETE answered for), nothing else would ever remove it.
/// Page by page; returns how many it queued.
pub async fn sweep_orphans(
    pool: &PgPool,
    store: &ObjectStore,
    settle: Duration,
    shutdown: &CancellationToken,
) -> Result<u64, SweepError> {
    let Some(cutoff) = chrono::Duration::from_std(settle)
        .ok()
        .and_then(|settle| Utc::now().checked_sub_signed(settle))
    else {
        return Ok(0); // Nothing can be that old.
    };
    let mut continuation: Option<String> = None;
    let mut queued = 0;
    for _ in 0..MAX_SWEEP_PAGES {
        let (page, next) = store.list_page("tasks/", continuation.as_deref()).await?;
        let (keys, ids): (Vec<String>, Vec<Uuid>) = page
            .into_iter()
            .filter(|o| o.last_modified.is_some_and(|t| t < cutoff))
            .filter_map(|o| attachment_of(&o.key).map(|id| (o.key, id)))
            .unzip();
        if !keys.is_empty() {
            let done = sqlx::query(
                "INSERT INTO attachment_gc (object_key)
                 SELECT o.k FROM unnest($1::text[], $2::uuid[]) AS o(k, id)
                  WHERE NOT EXISTS (SELECT 1 FROM attachments a WHERE a.attachment_id = o.id)
                 ON CONFLICT (object_key) DO NOTHING",
            )
            .bind(&keys)
            .bind(&ids)
            .execute(pool)
            .await?;
            queued += done.rows_affected();
        }
        match next {
            // A store that hands back the token it was given would loop.
            Some(token) if !shutdown.is_cancelled() && continuation.as_ref() != Some(&token) => {
                continuation = Some(token)
            }
            _ => break,
        }
    }
    if queued > 0 {
        metrics::counter!("attachment_orphans_queued_total").increment(queued);
    }
    Ok(queued)
}

/// Until `shutdown` or success: creates the bucket if it is missing, so a
/// fresh store needs no manual step (retried while the store is down).
pub async fn ensure_bucket_until(store: ObjectStore, shutdown: CancellationToken) {
    loop {
        match store.ensure_bucket().await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, bucket = store.bucket(),
                "attachments: cannot create the bucket yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_in_the_one_form_name_an_attachment() {
        let (task, attachment) = (Uuid::now_v7(), Uuid::now_v7());
        let key = objects::attachment_key(task, attachment);
        assert_eq!(attachment_of(&key), Some(attachment));
        for other in [
            format!("raw/{task}/{attachment}"),
            format!("tasks/{task}"),
            format!("tasks/{task}/{attachment}/x"),
            format!("tasks/{task}/{}", attachment.simple()),
            format!("tasks/{}/{attachment}", task.to_string().to_uppercase()),
            "tasks/a/b".to_owned(),
        ] {
            assert_eq!(attachment_of(&other), None, "{other}");
        }
    }

    #[test]
    fn filenames_are_checked() {
        for ok in ["a.txt", "spec v2 (final).pdf", "é.png", &"x".repeat(255)] {
            assert_eq!(check_filename(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " ",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\nb",
            "a\u{0}b",
            "a\u{7f}",
            "invoice\u{202e}fdp.exe",
            "zero\u{200b}width.txt",
            " leading.txt",
            "trailing.txt ",
            "dotted.",
            &"x".repeat(256),
        ] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
        // 128 two-byte characters: 256 bytes.
        assert!(check_filename(&"é".repeat(128)).is_err());
    }
}
