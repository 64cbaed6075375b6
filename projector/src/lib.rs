//! taskstream projector: Kafka event log → MongoDB views.
//!
//! [`views`] holds the view documents and the pure fold (`apply`) shared
//! with query-api; [`consumer`] is the batch loop around it.

pub mod analytics;
pub mod config;
pub mod consumer;
pub mod mongo;
pub mod rebuild;
pub mod replay;
pub mod startup;
pub mod views;
pub mod write_errors;

pub use config::Config;
pub use startup::Application;
