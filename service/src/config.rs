//! Configuration from environment variables: every failure names the variable.
//!
//! The settings of each dependency (`settings`) are read with the service's
//! prefix, so every service names them alike, and write themselves back as
//! variables, so the test harness and the services share one list of names.

mod settings;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::str::FromStr;

pub use secrecy::{ExposeSecret, SecretString};
pub use settings::{KafkaSettings, MongoSettings, PostgresSettings, Settings, ToEnv};

/// `RUST_LOG`: the log filter (`telemetry`), default `info`.
pub const LOG_FILTER_VAR: &str = "RUST_LOG";

/// `{prefix}_{name}`: the variable `name` of the service with `prefix`.
pub fn var(prefix: &str, name: &str) -> String {
    format!("{prefix}_{name}")
}

/// The variables `names` of the service with `prefix`.
pub fn prefixed(prefix: &str, names: &[&str]) -> Vec<String> {
    names.iter().map(|name| var(prefix, name)).collect()
}

/// `(name, value)` for an environment variable.
pub fn kv(name: impl Into<String>, value: impl ToString) -> (String, String) {
    (name.into(), value.to_string())
}

/// A service's configuration as environment variables, all with the
/// service's prefix: its own, then each dependency's settings. A service
/// declares its variables here once; [`ServiceConfig::vars`] and
/// [`ServiceConfig::to_env`] follow (the test harness writes a child
/// process's environment with the latter).
pub trait ServiceConfig {
    /// The prefix of every variable the service reads (`COMMAND_API`, ...).
    const PREFIX: &'static str;
    /// The service's own variables, after the prefix.
    const OWN_VARS: &'static [&'static str];
    /// Its dependencies' variables (`PostgresSettings::vars`, ...).
    const DEPENDENCY_VARS: &'static [fn(&str) -> Vec<String>];
    /// Variables read without the prefix (e.g. development mode).
    const UNPREFIXED_VARS: &'static [&'static str] = &[];

    /// The values of [`ServiceConfig::OWN_VARS`], secrets in the clear.
    fn own_env(&self) -> Vec<(&'static str, String)>;
    /// The dependencies' settings, in the order of `DEPENDENCY_VARS`.
    fn dependencies(&self) -> Vec<&dyn ToEnv>;

    /// Every variable the service reads.
    fn vars() -> Vec<String> {
        let mut vars = prefixed(Self::PREFIX, Self::OWN_VARS);
        for dependency in Self::DEPENDENCY_VARS {
            vars.extend(dependency(Self::PREFIX));
        }
        vars.extend(Self::UNPREFIXED_VARS.iter().map(|v| (*v).to_owned()));
        vars
    }

    /// The variables that configure the service as this config does,
    /// secrets in the clear: for a child process, never for a log.
    fn to_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .own_env()
            .into_iter()
            .map(|(name, value)| (var(Self::PREFIX, name), value))
            .collect();
        for settings in self.dependencies() {
            env.extend(settings.to_env(Self::PREFIX));
        }
        env
    }
}

thread_local! {
    /// Set only inside [`read_from`]: the variables to read instead of the
    /// process environment, and the names asked for so far.
    static READING: RefCell<Option<Reading>> = const { RefCell::new(None) };
}

struct Reading {
    vars: HashMap<String, String>,
    asked: BTreeSet<String>,
}

/// Runs `read` (a `from_env`) on this thread against exactly `vars` instead
/// of the process environment; returns its result and the names of every
/// variable it asked for, so a config's list of its variables can be
/// checked against what it really reads.
pub fn read_from<T>(vars: &[(String, String)], read: impl FnOnce() -> T) -> (T, BTreeSet<String>) {
    // Cleared even if `read` panics, so this thread reads the process environment again.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            READING.with_borrow_mut(|r| *r = None);
        }
    }
    READING.with_borrow_mut(|r| {
        *r = Some(Reading {
            vars: vars.iter().cloned().collect(),
            asked: BTreeSet::new(),
        })
    });
    let _clear = Clear;
    let value = read();
    let asked = READING.with_borrow_mut(|r| r.as_mut().map(|r| std::mem::take(&mut r.asked)));
    (value, asked.unwrap_or_default())
}

/// The raw value of `var`: from [`read_from`]'s list inside it, else from the process environment.
fn lookup(var: &str) -> Result<Option<String>, ConfigError> {
    let listed = READING.with_borrow_mut(|r| {
        r.as_mut().map(|r| {
            r.asked.insert(var.to_owned());
            r.vars.get(var).cloned()
        })
    });
    if let Some(value) = listed {
        return Ok(value);
    }
    match std::env::var(var) {
        Ok(raw) => Ok(Some(raw)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError {
            var: var.to_owned(),
            reason: "is not valid UTF-8".into(),
        }),
    }
}

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
    match lookup(var)? {
        Some(raw) => parse(var, &raw),
        None => Ok(default),
    }
}

/// Reads an optional variable; an empty value counts as unset.
pub fn env_opt<T>(var: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match lookup(var)? {
        Some(raw) if raw.trim().is_empty() => Ok(None),
        Some(raw) => parse(var, &raw).map(Some),
        None => Ok(None),
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
pub fn secret(var: &str, dev_value: &str, min_len: usize) -> Result<SecretString, ConfigError> {
    let dev = development_mode()?;
    let err = |reason: String| ConfigError {
        var: var.to_owned(),
        reason,
    };
    let value = match env_opt::<String>(var)? {
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
    };
    value.map(SecretString::from)
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

    #[test]
    fn read_from_reads_only_the_listed_variables_and_names_those_asked_for() {
        std::env::set_var("SERVICE_TEST_LISTED_Z", "9");
        let listed = [kv("SERVICE_TEST_OTHER_Z", 3)];
        let (read, asked) = read_from(&listed, || {
            (
                env_or::<u16>("SERVICE_TEST_LISTED_Z", 1),
                env_or::<u16>("SERVICE_TEST_OTHER_Z", 1),
            )
        });
        assert_eq!((read.0.unwrap(), read.1.unwrap()), (1, 3));
        assert_eq!(
            asked.into_iter().collect::<Vec<_>>(),
            ["SERVICE_TEST_LISTED_Z", "SERVICE_TEST_OTHER_Z"]
        );
        // Outside it, the process environment again.
        assert_eq!(env_or::<u16>("SERVICE_TEST_LISTED_Z", 1).unwrap(), 9);
    }
}
