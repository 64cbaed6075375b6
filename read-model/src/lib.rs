//! taskstream read model: the MongoDB documents the projector writes and
//! query-api reads, the pure folds that turn events into them, the
//! analytics facts, their indexes and the MongoDB connection.
//!
//! **API boundary.** The shape of every view lives here and only here: the
//! projector folds events with [`views::View::apply`] and
//! [`analytics::TaskFacts`], query-api deserialises the same types. This
//! crate does no Kafka and no HTTP; it depends on no service crate, so the
//! read-only query-api links neither the broker client nor the projector.

pub mod analytics;
mod fold;
pub mod mongo;
pub mod views;

use bson::Document;
use mongodb::Database;

/// Creates the indexes of every view and of the analytics facts if they do
/// not exist yet (see [`views`] and [`analytics`]); idempotent.
pub async fn ensure_indexes(db: &Database) -> Result<(), mongodb::error::Error> {
    db.collection::<Document>(views::TASK_VIEWS)
        .create_indexes(views::task_indexes())
        .await?;
    db.collection::<Document>(views::USER_VIEWS)
        .create_indexes(views::user_indexes())
        .await?;
    db.collection::<Document>(views::PROJECT_VIEWS)
        .create_indexes(views::project_indexes())
        .await?;
    analytics::ensure_facts_indexes(db, analytics::TASK_FACTS).await
}
