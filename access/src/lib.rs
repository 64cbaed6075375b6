//! taskstream access: what every API needs to decide who is calling.
//!
//! Verifying auth's access tokens locally ([`verify`]: the [`TokenVerifier`]
//! and the [`AuthUser`]/[`AdminUser`] extractors), the public keys they are
//! checked against ([`jwks`]), and the account directory that makes a
//! deactivation or a role change apply at once ([`accounts`]); which tokens
//! an API accepts, from its environment ([`settings`]); and the normal form
//! of an email address ([`email`]), which auth and command-api share.
//!
//! **API boundary.** auth issues tokens with its own private key and only
//! publishes [`jwks::Jwks`]; this crate never signs anything and holds no
//! secret. It depends on no service crate, so command-api and query-api can
//! check tokens without linking auth's password hashing or its store.

pub mod accounts;
pub mod email;
pub mod jwks;
mod settings;
pub mod verify;

pub use settings::JwtSettings;
pub use verify::{AdminUser, AuthUser, Claims, TokenVerifier};

/// The most projects one user may belong to: command-api refuses one more
/// (`COMMAND_API_MAX_PROJECTS_PER_USER` may lower it, never raise it), and
/// query-api reads at most this many memberships per request.
pub const MAX_PROJECTS_PER_USER: u32 = 1_000;

/// The `iss` auth puts in its tokens unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "taskstream-auth";
/// The `aud` auth puts in its tokens unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "taskstream";
