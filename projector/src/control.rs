//! The pause/lock protocol between `projector rebuild` and the live
//! projector, kept in `projector_control` (see `rebuild` for how the swap
//! uses it):
//!
//! - `rebuild:<view>`: one rebuild per view at a time; the holder
//!   (`<host>:<pid>`) renews `heartbeat_at` every batch, and a lock whose
//!   holder died is taken over.
//! - `pause:<view>`: a rebuild asks the live projector to stop writing that
//!   view; the live projector acknowledges (`acked_at`) before its next
//!   batch and waits until the document is gone, at most [`MAX_PAUSE`].

use std::time::{Duration, Instant};

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::Database;
use tokio_util::sync::CancellationToken;

/// Collection of control documents shared by rebuilds and the live projector.
pub const CONTROL: &str = "projector_control";
/// A live projector waits at most this long for a pause to be lifted.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);
/// How long the rebuild waits for the live projector to acknowledge a pause.
const ACK_WAIT: Duration = Duration::from_secs(3);

fn pause_id(collection: &str) -> String {
    format!("pause:{collection}")
}

fn lock_id(collection: &str) -> String {
    format!("rebuild:{collection}")
}

/// A rebuild's lock counts as abandoned once its heartbeat (renewed every
/// batch) is this old, or at once when its holder was a process on this host
/// that no longer exists (a killed rebuild restarted on the same machine).
pub const LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(60);

/// `<host>:<pid>` of this process, recorded in the lock.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

/// True when `holder` names a process of this host that has exited.
fn holder_is_gone(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    let mine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    !host.is_empty()
        && host == mine.trim()
        && pid.parse::<u32>().is_ok_and(|p| p != std::process::id())
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// One rebuild per view at a time. A lock whose holder died (see
/// [`LOCK_STALE`]) is taken over, and the dead rebuild's pause request, if
/// any, is lifted.
pub(crate) async fn take_lock(db: &Database, live: &str) -> anyhow::Result<()> {
    let control = db.collection::<Document>(CONTROL);
    let now = bson::DateTime::now();
    let me = holder();
    match control
        .insert_one(doc! { "_id": lock_id(live), "heartbeat_at": now, "holder": &me })
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if is_duplicate_key(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let current = control.find_one(doc! { "_id": lock_id(live) }).await?;
    let abandoned = current.as_ref().is_some_and(|d| {
        let beat = d
            .get_datetime("heartbeat_at")
            .map(|t| t.timestamp_millis())
            .unwrap_or(0);
        now.timestamp_millis() - beat > LOCK_STALE.as_millis() as i64
            || d.get_str("holder").is_ok_and(holder_is_gone)
    });
    if !abandoned {
        anyhow::bail!("another rebuild of {live} is running");
    }
    // Take it over only if it is still the abandoned one.
    let previous = current
        .and_then(|d| d.get_str("holder").ok().map(str::to_owned))
        .unwrap_or_default();
    let taken = control
        .update_one(
            doc! { "_id": lock_id(live), "holder": &previous },
            doc! { "$set": { "heartbeat_at": now, "holder": &me } },
        )
        .await?;
    if taken.matched_count != 1 {
        anyhow::bail!("another rebuild of {live} is running");
    }
    tracing::warn!(previous = %previous, "took over the lock of an abandoned rebuild");
    control.delete_one(doc! { "_id": pause_id(live) }).await?;
    Ok(())
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            w.code == 11000
        }
        _ => e.to_string().contains("E11000") || e.to_string().contains("duplicate key"),
    }
}

/// Renews the lock's heartbeat: tells a later rebuild this one is alive.
pub(crate) async fn heartbeat(db: &Database, live: &str) -> Result<(), mongodb::error::Error> {
    db.collection::<Document>(CONTROL)
        .update_one(
            doc! { "_id": lock_id(live) },
            doc! { "$set": { "heartbeat_at": bson::DateTime::now() } },
        )
        .await
        .map(|_| ())
}

/// Lifts the pause and releases the lock, whatever happened (best effort:
/// a lock left behind is taken over after [`LOCK_STALE`]).
pub(crate) async fn release(db: &Database, live: &str) {
    let control = db.collection::<Document>(CONTROL);
    let _ = control.delete_one(doc! { "_id": pause_id(live) }).await;
    let _ = control.delete_one(doc! { "_id": lock_id(live) }).await;
}

/// Asks the live projector to pause and waits (briefly) for its answer.
pub(crate) async fn pause_live(db: &Database, live: &str) -> anyhow::Result<()> {
    let control = db.collection::<Document>(CONTROL);
    control
        .replace_one(
            doc! { "_id": pause_id(live) },
            doc! { "_id": pause_id(live), "requested_at": bson::DateTime::now() },
        )
        .upsert(true)
        .await?;
    let deadline = Instant::now() + ACK_WAIT;
    while Instant::now() < deadline {
        let doc = control.find_one(doc! { "_id": pause_id(live) }).await?;
        if doc.is_some_and(|d| d.contains_key("acked_at")) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No answer: the live projector is idle (it checks before each batch)
    // or not running; either way the final round covers what it may write.
    tracing::info!("live projector did not acknowledge the pause (idle or not running)");
    Ok(())
}

/// Called by the live projector before each batch: if a rebuild asked it to
/// pause a collection it writes, acknowledge and wait until the pause is
/// lifted (at most [`MAX_PAUSE`]).
pub async fn honour_pause<'a>(
    db: &Database,
    collections: impl IntoIterator<Item = &'a str>,
    shutdown: &CancellationToken,
) -> Result<(), mongodb::error::Error> {
    let ids: Vec<String> = collections.into_iter().map(pause_id).collect();
    let control = db.collection::<Document>(CONTROL);
    let filter = doc! { "_id": { "$in": &ids } };
    let pending: Vec<Document> = control.find(filter.clone()).await?.try_collect().await?;
    if pending.is_empty() {
        return Ok(());
    }
    let since = Instant::now();
    control
        .update_many(
            filter.clone(),
            doc! { "$set": { "acked_at": bson::DateTime::now() } },
        )
        .await?;
    tracing::info!("paused for a rebuild's swap");
    metrics::counter!("projector_rebuild_pauses_total").increment(1);
    while since.elapsed() < MAX_PAUSE && !shutdown.is_cancelled() {
        if control.count_documents(filter.clone()).await? == 0 {
            tracing::info!(
                paused_ms = since.elapsed().as_millis() as u64,
                "resumed after a rebuild's swap"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!("a rebuild's pause was not lifted within {MAX_PAUSE:?}; resuming");
    Ok(())
}
