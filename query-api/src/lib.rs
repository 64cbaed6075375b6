//! taskstream query side: filtered, paginated reads over the MongoDB views
//! the projector maintains, with read-your-writes via consistency tokens.

mod analytics;
mod attachments;
pub mod config;
mod consistency;
mod cursor;
mod openapi;
mod params;
mod projects;
mod startup;
mod store;
mod tasks;

pub use config::Config;
pub use startup::Application;

/// The OpenAPI document query-api serves at `/openapi.json`, built by the
/// same function as the served one (the gateway merges it into its document).
pub fn openapi() -> utoipa::openapi::OpenApi {
    startup::documented_routes(service::health::Readiness::new()).1
}
