//! taskstream command side: REST writes → pure domain (tasks, projects) →
//! Postgres event store.

mod api;
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
