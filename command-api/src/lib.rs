//! taskstream command side: REST writes → pure domain → Postgres event store.

mod api;
mod config;
mod domain;
pub mod idempotency;
pub mod startup;
mod tasks;
mod write_limit;

pub use config::Config;
pub use startup::Application;
