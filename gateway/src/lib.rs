//! taskstream gateway: what HAProxy needs from the Rust code, generated
//! from the services' own OpenAPI documents.
//!
//! The gateway is HAProxy (`gateway/haproxy.cfg`), not a proxy of our own.
//! This crate renders the three files it reads, committed next to that
//! configuration:
//!
//! - `openapi.json`: one OpenAPI 3.1 document for the whole public API,
//!   merged from auth's, command-api's, query-api's and the notifier's, plus the answers
//!   the gateway itself gives (429, 411, 413, 502, 503, 504) ([`merge()`],
//!   [`merge::add_gateway_responses`]);
//! - `routes.map`: a `map_reg` map over `<METHOD><path>` whose value is
//!   `<backend>|<bearer|public>|<documented path>`: which backend serves
//!   the method on the path, whether the operation takes a Bearer token (a
//!   token picks a per-user budget only there), and the route the access
//!   log names, e.g. `query|bearer|/tasks/{id}` ([`render::routes_map`]);
//! - `allow.map`: the `Allow` list of every path, for 405 answers
//!   ([`render::allow_map`]).
//!
//! They are committed, not built at start-up, because compose and
//! `scripts/infra` start HAProxy without a Rust build. `cargo run -p gateway
//! --bin gateway-render` rewrites them (`--check` only compares), and the
//! test `tests/generated.rs` fails while a committed file differs from what
//! the services' documents give today.
//!
//! **Invariant:** the route maps and the document come from the same
//! documents the services serve (`auth::openapi()` and its siblings), so a
//! path is routed exactly when it is documented, to the service that
//! documents it.
//!
//! A new service behind the gateway is a [`Backend`] variant (its HAProxy
//! backend name and its `openapi()`), a backend of that name in
//! `haproxy.cfg`, and a render.

use utoipa::openapi::OpenApi;

pub mod merge;
pub mod render;

pub use merge::{merge, Access, MergeError, Merged, Method, Route};

/// A service behind the gateway, named as its HAProxy backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    Auth,
    Command,
    Query,
    Notifier,
}

impl Backend {
    /// Every backend, in the order their documents are merged.
    pub const ALL: [Backend; 4] = [
        Backend::Auth,
        Backend::Command,
        Backend::Query,
        Backend::Notifier,
    ];

    /// The backend's name in `haproxy.cfg`, the value `routes.map` gives.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auth => "auth",
            Backend::Command => "command",
            Backend::Query => "query",
            Backend::Notifier => "notifier",
        }
    }

    /// The service behind the backend (its crate and binary).
    pub fn service(self) -> &'static str {
        match self {
            Backend::Auth => "auth",
            Backend::Command => "command-api",
            Backend::Query => "query-api",
            Backend::Notifier => "notifier",
        }
    }

    /// The document the service serves at its own `/openapi.json`.
    pub fn document(self) -> OpenApi {
        match self {
            Backend::Auth => auth::openapi(),
            Backend::Command => command_api::openapi(),
            Backend::Query => query_api::openapi(),
            Backend::Notifier => notifier::openapi(),
        }
    }
}

/// Each backend's document, in [`Backend::ALL`] order.
pub fn documents() -> Vec<(Backend, OpenApi)> {
    Backend::ALL
        .into_iter()
        .map(|b| (b, b.document()))
        .collect()
}

/// The whole public API as one OpenAPI 3.1 document.
pub fn merged() -> Result<OpenApi, MergeError> {
    merge(documents()).map(|m| m.document)
}

/// One generated file: its name in the crate directory and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub name: &'static str,
    pub content: String,
}

/// The command that regenerates the files, for headers and messages.
pub const RENDER_COMMAND: &str = "cargo run -p gateway --bin gateway-render";

/// The generated files, as the services' documents give them today.
pub fn generate() -> Result<Vec<GeneratedFile>, MergeError> {
    let merged = merge(documents())?;
    Ok(vec![
        GeneratedFile {
            name: "openapi.json",
            content: render::document_json(&merged.document)?,
        },
        GeneratedFile {
            name: "routes.map",
            content: render::routes_map(&merged.routes),
        },
        GeneratedFile {
            name: "allow.map",
            content: render::allow_map(&merged.routes),
        },
    ])
}
