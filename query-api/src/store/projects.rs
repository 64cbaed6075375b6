//! Reads of the project views. Which projects a caller may see is decided
//! by the caller from `project_members` (see `store::members`); these
//! reads only fetch the views of the projects they are given. A view
//! flagged deleted is never returned.

use bson::{doc, Bson};
use futures::TryStreamExt;
use mongodb::Database;
use read_model::views::{ProjectView, PROJECT_VIEWS};
use uuid::Uuid;

use super::StoreError;
use crate::cursor::Position;

/// The live view of project `id`; `None` when missing or deleted.
pub async fn find(db: &Database, id: Uuid) -> Result<Option<ProjectView>, StoreError> {
    let view = db
        .collection::<ProjectView>(PROJECT_VIEWS)
        .find_one(doc! { "_id": id.to_string() })
        .await
        .map_err(StoreError::views("reading a project failed"))?;
    Ok(view.filter(|v| !v.deleted))
}

/// One page of the live views among `ids`, by `created_at` then id,
/// strictly after `after`; and whether more follow. `ids` is bounded by
/// the caller (`store::members::MAX_MEMBERSHIPS`), so the `_id` index
/// selects at most that many documents.
pub async fn page(
    db: &Database,
    ids: &[Uuid],
    archived: Option<bool>,
    after: Option<&Position>,
    limit: usize,
) -> Result<(Vec<ProjectView>, bool), StoreError> {
    if ids.is_empty() {
        return Ok((Vec::new(), false));
    }
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let mut all = vec![doc! { "_id": { "$in": keys }, "deleted": false }];
    if let Some(a) = archived {
        all.push(doc! { "archived": a });
    }
    if let Some((p, ms)) = after.and_then(|p| p.value.map(|v| (p, v))) {
        let at = Bson::DateTime(bson::DateTime::from_millis(ms));
        all.push(doc! { "$or": [
            { "created_at": { "$gt": at.clone() } },
            { "created_at": at, "_id": { "$gt": &p.id } },
        ] });
    }
    let failed = "listing projects failed";
    let mut items: Vec<ProjectView> = db
        .collection::<ProjectView>(PROJECT_VIEWS)
        .find(doc! { "$and": all })
        .sort(doc! { "created_at": 1, "_id": 1 })
        .limit(limit as i64 + 1)
        .await
        .map_err(StoreError::views(failed))?
        .try_collect()
        .await
        .map_err(StoreError::views(failed))?;
    let more = items.len() > limit;
    items.truncate(limit);
    Ok((items, more))
}
