//! taskstream command side: REST writes → pure domain → Postgres event store.

mod api;
pub mod config;
pub mod domain;
pub mod idempotency;
pub mod startup;
pub mod tasks;
pub mod write_limit;

pub use config::Config;
pub use startup::Application;
