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
pub mod mongo;
pub mod views;
