//! taskstream projector: Kafka event log → MongoDB views.

pub mod config;
pub mod mongo;
pub mod startup;

pub use config::Config;
pub use startup::Application;
