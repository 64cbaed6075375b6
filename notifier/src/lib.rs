//! taskstream notifier: the event log → a durable due-date schedule and
//! each user's inbox.
//!
//! `consumer` reads task, project and user events in its own consumer
//! group and, per batch in one Postgres transaction, folds them with
//! `fold` into the notifier's tables (`store`), recomputes the affected
//! tasks' schedules (`schedule`: pure, deterministic ids) and writes the
//! notifications events cause (assignments, project membership). The
//! `scheduler` fires due schedule rows into the inbox, re-checking each
//! against the task as it is then. `api` serves the inbox and the settings. `delivery` sends each
//! notification out by e-mail and to `webhooks` endpoints. `retention`
//! deletes what is older than the retention.

mod api;
pub mod config;
mod consumer;
mod delivery;
mod email;
mod fold;
mod page;
pub mod rebuild;
mod retention;
mod schedule;
mod scheduler;
mod startup;
mod store;
mod webhooks;

pub use config::Config;
pub use startup::Application;

/// The OpenAPI document the notifier serves at `/openapi.json`, built by
/// the same function as the served one.
pub fn openapi() -> utoipa::openapi::OpenApi {
    startup::documented_routes(service::health::Readiness::new()).1
}
