//! Reads of the users view: the names and addresses shown next to ids
//! (project members, history actors).

use std::collections::HashMap;

use bson::doc;
use futures::TryStreamExt;
use mongodb::Database;
use read_model::views::{UserView, USER_VIEWS};
use uuid::Uuid;

use super::StoreError;

/// The views of `ids` that exist, by id. A user the projector has not
/// seen yet is simply absent. Callers bound `ids` (a project's members,
/// a history's distinct actors).
pub async fn by_ids(db: &Database, ids: &[Uuid]) -> Result<HashMap<Uuid, UserView>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let failed = "reading the users view failed";
    let views: Vec<UserView> = db
        .collection::<UserView>(USER_VIEWS)
        .find(doc! { "_id": { "$in": keys } })
        .await
        .map_err(StoreError::views(failed))?
        .try_collect()
        .await
        .map_err(StoreError::views(failed))?;
    Ok(views
        .into_iter()
        .filter_map(|v| Some((Uuid::try_parse(&v.id).ok()?, v)))
        .collect())
}
