//! taskstream query side: filtered, paginated reads over the MongoDB views
//! the projector maintains, with read-your-writes via consistency tokens.

pub mod analytics;
pub mod config;
pub mod consistency;
pub mod cursor;
pub mod openapi;
pub mod params;
pub mod startup;
mod store;
pub mod tasks;

pub use config::Config;
pub use startup::Application;
