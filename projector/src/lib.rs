//! taskstream projector: Kafka event log → MongoDB views.
//!
//! The view documents and their pure folds live in the `read-model` crate,
//! shared with query-api. `consumer` is the live loop around them, which
//! writes through the guarded `writer`; [`rebuild`] rebuilds a view beside
//! the live one and swaps it in, coordinating with the live loop through
//! `control`; both fold with `fold`.

mod config;
mod consumer;
mod control;
mod fold;
mod lag;
pub mod rebuild;
pub mod replay;
mod startup;
mod write_errors;
mod writer;

pub use config::Config;
pub use consumer::JOURNAL_BARRIER;
pub use startup::Application;
