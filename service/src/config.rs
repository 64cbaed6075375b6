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
