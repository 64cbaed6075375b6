//! Reads of the analytics projection (`task_facts`).

use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::bson::Bson;
use mongodb::Database;
use read_model::analytics::{TaskFacts, TASK_FACTS};

use super::StoreError;
use crate::analytics::Scope;

/// The facts of the live tasks `scope` covers: one owner's personal tasks
/// (no project; absent in facts written before projects), one project's
/// tasks, or every task.
pub async fn facts(db: &Database, scope: Scope) -> Result<Vec<TaskFacts>, StoreError> {
    let filter = match scope {
        Scope::Owner(o) => {
            doc! { "owner_id": o.to_string(), "project_id": Bson::Null, "deleted": false }
        }
        Scope::Project(p) => doc! { "project_id": p.to_string(), "deleted": false },
        Scope::All => doc! { "deleted": false },
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
