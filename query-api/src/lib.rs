//! taskstream query side: filtered, paginated reads over the MongoDB views.

pub mod config;
pub mod startup;

pub use config::Config;
pub use startup::Application;
