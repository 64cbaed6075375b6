//! taskstream auth: the service that owns users, logins, roles and the
//! signing key, and issues tokens. The APIs verify them with the `access`
//! crate, which this service uses too for its own endpoints.
//!
//! # Endpoints
//!
//! `POST /auth/register`, `POST /auth/login`, `POST /auth/refresh`,
//! `POST /auth/logout`, `GET /auth/me`, `GET /admin/users`,
//! `PATCH /admin/users/{id}/role`, `POST /admin/users/{id}/deactivate`,
//! `POST /admin/users/{id}/reactivate`, `GET /.well-known/jwks.json`, and `GET /openapi.json` describing them
//! all. Errors are problem+json. Token responses carry
//! `Cache-Control: no-store` and `Pragma: no-cache`.
//!
//! # The first admin (bootstrap)
//!
//! Registration never makes an admin, whoever registers first and with
//! whatever address. The operator creates the first admin on the command
//! line ([`operator`]): `auth create-admin --email ADDRESS` (the password
//! from `AUTH_ADMIN_PASSWORD`, else the first line of standard input), or
//! `auth promote --email ADDRESS` for an existing account. Admins then grant
//! or remove the role with `PATCH /admin/users/{id}/role`; the last active
//! admin can be neither demoted nor deactivated (409).
//!
//! # Abuse limits
//!
//! Login and registration are each limited per client IP
//! (`AUTH_RATE_LIMIT_PER_MINUTE`, default 30) and per email
//! (`AUTH_RATE_LIMIT_PER_EMAIL_PER_MINUTE`, default 10), in memory per
//! process; over the limit the answer is 429 with `Retry-After`. The
//! limiters hold fixed-size keys only (an email is counted only once it is
//! at most 254 bytes, and kept as a salted hash), forget a key once its
//! budget is whole again (checked every second), and hold at most
//! `AUTH_RATE_LIMIT_CAPACITY` keys each (default 100,000). The client
//! IP is the connection's peer, or, when the peer is one of
//! `AUTH_TRUSTED_PROXIES` (default none: forwarding headers are not
//! trusted), the rightmost `X-Forwarded-For` value
//! (`service::http::ClientIp`). Bodies over 64 KiB are refused with 413,
//! unknown JSON fields with 422.
//!
//! # Emails, names and passwords
//!
//! Emails are stored, looked up and rate-limited in one normal form (NFKC,
//! full case folding, the domain as IDNA A-labels); hidden characters
//! (whitespace, control and format characters such as zero-width joiners and
//! bidi controls, blank fillers) are refused. Two addresses with the same
//! confusable skeleton (Unicode TS #39) are one account: the skeleton is
//! unique in `users.email_skeleton`. Display names refuse control and format
//! characters and need a visible character; passwords need 10 characters not
//! counting invisible ones, at least one of them visible.
//!
//! # Deactivation
//!
//! A deactivated user cannot log in or refresh, and their refresh tokens are
//! revoked at once; auth's own endpoints refuse their access tokens too. The
//! APIs verify tokens locally, and their verifier follows the user events
//! (`access::accounts`): a deactivated account's tokens are refused there, and a
//! changed role applies, within about a poll interval (250 ms). An admin
//! reactivates an account with `POST /admin/users/{id}/reactivate`; its old
//! refresh tokens stay revoked.
//!
//! # Secrets
//!
//! Passwords are hashed with argon2id (m = 19 MiB, t = 2, p = 1) and refresh
//! tokens are stored as SHA-256 hashes; neither hash, nor any token, ever
//! appears in an event, a response other than the one issuing the token, or
//! a log line.

mod api;
pub mod config;
mod domain;
mod error;
pub mod keys;
pub mod operator;
mod password;
mod rate_limit;
mod refresh;
mod startup;
pub mod tokens;
pub mod users;

pub use config::Config;
pub use startup::Application;

/// The OpenAPI document auth serves at `/openapi.json`, built by the same
/// function as the served one (the gateway merges it into its document).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::routes(service::health::Readiness::new()).1
}
