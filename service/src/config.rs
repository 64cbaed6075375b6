//! Configuration from environment variables: every failure names the variable.

use std::fmt::Display;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

/// Reads `var`, falling back to `default` when unset; malformed → error naming `var`.
pub fn env_or<T>(var: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(var) {
        Ok(raw) => parse(var, &raw),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError {
            var: var.to_owned(),
            reason: "is not valid UTF-8".into(),
        }),
    }
}

/// Reads an optional variable; an empty value counts as unset.
pub fn env_opt<T>(var: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(var) {
        Ok(raw) if raw.trim().is_empty() => Ok(None),
        Ok(raw) => parse(var, &raw).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError {
            var: var.to_owned(),
            reason: "is not valid UTF-8".into(),
        }),
    }
}

/// `TASKSTREAM_DEVELOPMENT`: `1` or `true` turns on development mode, in
/// which a secret left unset falls back to its published development value.
/// Off by default, so a production deployment never runs on one.
pub const DEVELOPMENT_VAR: &str = "TASKSTREAM_DEVELOPMENT";

/// Whether [`DEVELOPMENT_VAR`] is set to `1` or `true`.
pub fn development_mode() -> Result<bool, ConfigError> {
    match env_opt::<String>(DEVELOPMENT_VAR)? {
        None => Ok(false),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            other => Err(ConfigError {
                var: DEVELOPMENT_VAR.to_owned(),
                reason: format!("expected 1 or 0, got {other:?}"),
            }),
        },
    }
}

/// Reads a secret. Outside development mode it must be set, must not be the
/// published `dev_value`, and must be at least `min_len` bytes; in
/// development mode an unset secret is `dev_value`.
pub fn secret(var: &str, dev_value: &str, min_len: usize) -> Result<String, ConfigError> {
    let dev = development_mode()?;
    let err = |reason: String| ConfigError {
        var: var.to_owned(),
        reason,
    };
    match env_opt::<String>(var)? {
        None if dev => Ok(dev_value.to_owned()),
        None => Err(err(format!(
            "is required (a random secret of at least {min_len} bytes); \
             set {DEVELOPMENT_VAR}=1 to run with the development value"
        ))),
        Some(v) if v == dev_value && !dev => Err(err(
            "is the published development value; set a secret of your own".into(),
        )),
        Some(v) if v.len() < min_len && !dev => {
            Err(err(format!("is shorter than {min_len} bytes")))
        }
        Some(v) => Ok(v),
    }
}

fn parse<T>(var: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    raw.trim().parse::<T>().map_err(|e| ConfigError {
        var: var.to_owned(),
        reason: format!("cannot parse {raw:?}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_value_names_the_variable() {
        std::env::set_var("SERVICE_TEST_PORT_X", "not-a-number");
        let err = env_or::<u16>("SERVICE_TEST_PORT_X", 1).unwrap_err();
        assert_eq!(err.var, "SERVICE_TEST_PORT_X");
        assert!(err.to_string().contains("SERVICE_TEST_PORT_X"), "{err}");
    }

    #[test]
    fn unset_variable_takes_the_default() {
        assert_eq!(env_or::<u16>("SERVICE_TEST_UNSET_Y", 7).unwrap(), 7);
        assert_eq!(env_opt::<u16>("SERVICE_TEST_UNSET_Y").unwrap(), None);
    }
}
