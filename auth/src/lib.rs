//! taskstream auth: the service (users, login, tokens, roles) and the
//! library the APIs use to verify access tokens locally ([`verify`]).

pub mod config;
pub mod keys;
pub mod startup;
pub mod tokens;
pub mod verify;

pub use config::Config;
pub use startup::Application;
pub use verify::{AuthUser, Claims, TokenVerifier};
