//! taskstream command side: REST writes → pure domain → Postgres event store.

pub mod config;
pub mod startup;

pub use config::Config;
pub use startup::Application;
