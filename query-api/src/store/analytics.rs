//! Reads of the analytics projection (`task_facts`).

use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::Database;
use read_model::analytics::{TaskFacts, TASK_FACTS};
use uuid::Uuid;

use super::StoreError;

/// The facts of `owner`'s live tasks (`None`: every user's).
pub async fn facts(db: &Database, owner: Option<Uuid>) -> Result<Vec<TaskFacts>, StoreError> {
    let filter = match owner {
        Some(o) => doc! { "owner_id": o.to_string(), "deleted": false },
        None => doc! { "deleted": false },
    };
    let failed = "reading the analytics projection failed";
    let cursor = db
        .collection::<TaskFacts>(TASK_FACTS)
        .find(filter)
        .await
        .map_err(StoreError::views(failed))?;
    cursor
        .try_collect()
        .await
        .map_err(StoreError::views(failed))
}
