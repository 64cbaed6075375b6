//! taskstream command side: REST writes → pure domain (tasks, projects) →
//! Postgres event store.

mod api;
pub mod attachments;
pub mod config;
mod domain;
pub mod idempotency;
mod project;
mod projects;
pub mod startup;
mod tasks;
mod write_limit;

pub use config::Config;
pub use startup::Application;

/// The OpenAPI document command-api serves at `/openapi.json`, built by the
/// same function as the served one (the gateway merges it into its document).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::routes(service::health::Readiness::new()).1
}
