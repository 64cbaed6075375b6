//! Which tokens an API accepts: `{PREFIX}_JWKS_URL`, `{PREFIX}_JWT_ISSUER`
//! and `{PREFIX}_JWT_AUDIENCE`.

use service::config::{env_or, kv, prefixed, var, ConfigError, Settings};

use crate::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};

/// Where an API fetches auth's public keys and which claims it requires.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `{PREFIX}_JWKS_URL`, default [`JwtSettings::DEFAULT_JWKS_URL`].
    pub jwks_url: String,
    /// `{PREFIX}_JWT_ISSUER`, default [`DEFAULT_ISSUER`].
    pub issuer: String,
    /// `{PREFIX}_JWT_AUDIENCE`, default [`DEFAULT_AUDIENCE`].
    pub audience: String,
}

impl JwtSettings {
    /// auth's JWKS as `scripts/dev` runs it.
    pub const DEFAULT_JWKS_URL: &str = "http://127.0.0.1:8081/.well-known/jwks.json";
    const JWKS_URL: &str = "JWKS_URL";
    const ISSUER: &str = "JWT_ISSUER";
    const AUDIENCE: &str = "JWT_AUDIENCE";

    /// Keys from `jwks_url`, the default issuer and audience.
    pub fn new(jwks_url: impl Into<String>) -> Self {
        JwtSettings {
            jwks_url: jwks_url.into(),
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
        }
    }
}

impl Settings for JwtSettings {
    fn vars(prefix: &str) -> Vec<String> {
        prefixed(prefix, &[Self::JWKS_URL, Self::ISSUER, Self::AUDIENCE])
    }

    fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        Ok(JwtSettings {
            jwks_url: env_or(
                &var(prefix, Self::JWKS_URL),
                Self::DEFAULT_JWKS_URL.to_owned(),
            )?,
            issuer: env_or(&var(prefix, Self::ISSUER), DEFAULT_ISSUER.to_owned())?,
            audience: env_or(&var(prefix, Self::AUDIENCE), DEFAULT_AUDIENCE.to_owned())?,
        })
    }

    fn to_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            kv(var(prefix, Self::JWKS_URL), &self.jwks_url),
            kv(var(prefix, Self::ISSUER), &self.issuer),
            kv(var(prefix, Self::AUDIENCE), &self.audience),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use service::config::read_from;

    #[test]
    fn reads_back_what_it_writes_and_defaults_to_auths_claims() {
        let jwt = JwtSettings {
            issuer: "other-issuer".into(),
            ..JwtSettings::new("http://auth:8081/.well-known/jwks.json")
        };
        let env = jwt.to_env("API");
        let (read, asked) = read_from(&env, || JwtSettings::from_env("API"));
        assert_eq!(read.expect("reads back").to_env("API"), env);
        assert_eq!(asked.into_iter().collect::<Vec<_>>(), {
            let mut vars = JwtSettings::vars("API");
            vars.sort();
            vars
        });
        let (default, _) = read_from(&[], || JwtSettings::from_env("API"));
        let default = default.expect("defaults");
        assert_eq!(default.jwks_url, JwtSettings::DEFAULT_JWKS_URL);
        assert_eq!(
            (default.issuer.as_str(), default.audience.as_str()),
            (DEFAULT_ISSUER, DEFAULT_AUDIENCE)
        );
    }
}
