//! Plumbing every taskstream HTTP service shares, so that auth, command-api,
//! query-api and the projector's admin port behave the same way at the edges.

pub mod config;
pub mod health;
pub mod http;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod rate_limit;
pub mod shutdown;
pub mod telemetry;
pub mod text;
pub mod time;

pub use problem::{FieldError, Problem};
