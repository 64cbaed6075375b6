//! taskstream projector: Kafka event log → MongoDB views.
//!
//! The view documents and their pure folds live in the `read-model` crate,
//! shared with query-api; [`consumer`] is the batch loop around them.

pub mod config;
pub mod consumer;
pub mod rebuild;
pub mod replay;
pub mod startup;
pub mod write_errors;

pub use config::Config;
pub use startup::Application;
