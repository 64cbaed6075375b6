//! Account values that parse, not validate: once you hold an [`Email`], a
//! [`DisplayName`] or a [`NewPassword`], it is valid.

use std::fmt;

/// Longest email accepted (RFC 5321 path limit).
pub const EMAIL_MAX_LEN: usize = 254;
/// Shortest password accepted, in characters.
pub const PASSWORD_MIN_CHARS: usize = 10;
/// Longest password accepted, in bytes (argon2 would take more, but nobody needs it).
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// Longest display name accepted, in characters.
pub const DISPLAY_NAME_MAX_CHARS: usize = 100;

/// An email address, normalised: trimmed and lowercase. Two addresses that
/// differ only in letter case are the same account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = normalise_email(raw);
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.len() > EMAIL_MAX_LEN {
            return Err(format!("must be at most {EMAIL_MAX_LEN} bytes"));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("must be an email address (name@domain)".into());
        };
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return Err("must be an email address (name@domain)".into());
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`, the default display name.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map(|(l, _)| l).unwrap_or(&self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The normal form emails are stored, compared and rate-limited under,
/// applied even to input that is not a valid address.
pub fn normalise_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// How a user is shown to others: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be blank".into());
        }
        if name.chars().count() > DISPLAY_NAME_MAX_CHARS {
            return Err(format!(
                "must be at most {DISPLAY_NAME_MAX_CHARS} characters"
            ));
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(DisplayName(name.to_owned()))
    }

    /// The name used when registration gives none: the email's local part.
    pub fn from_email(email: &Email) -> Self {
        let local: String = email
            .local_part()
            .chars()
            .take(DISPLAY_NAME_MAX_CHARS)
            .collect();
        DisplayName(local)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password good enough to register with (at least 10 characters, at most
/// 1024 bytes). Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.len() > PASSWORD_MAX_BYTES {
            return Err(format!("must be at most {PASSWORD_MAX_BYTES} bytes"));
        }
        if raw.chars().count() < PASSWORD_MIN_CHARS {
            return Err(format!("must be at least {PASSWORD_MIN_CHARS} characters"));
        }
        if raw.trim().is_empty() {
            return Err("must not be only whitespace".into());
        }
        Ok(NewPassword(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Ada@Example.COM", Some("ada@example.com")),
            ("  bob@example.test ", Some("bob@example.test")),
            ("", None),
            ("no-at-sign", None),
            ("@example.com", None),
            ("a@b", None),
            ("a@.example.com", None),
            ("a@example..com", None),
            ("a b@example.com", None),
            ("a@b@example.com", None),
        ];
        for (raw, want) in cases {
            let got = Email::parse(raw).ok();
            assert_eq!(got.as_ref().map(Email::as_str), *want, "{raw:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn passwords() {
        let cases: &[(String, bool)] = &[
            ("short".into(), false),
            ("123456789".into(), false),
            ("1234567890".into(), true),
            ("          ".into(), false),
            ("ünïcödé-pw".into(), true),
            ("x".repeat(1024), true),
            ("x".repeat(1025), false),
            ("é".repeat(513), false),
        ];
        for (raw, ok) in cases {
            assert_eq!(NewPassword::parse(raw.clone()).is_ok(), *ok, "{raw:?}");
        }
        let pw = NewPassword::parse("correct horse battery".into()).unwrap();
        assert!(!format!("{pw:?}").contains("horse"));
    }

    #[test]
    fn display_names() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(DisplayName::parse(&"n".repeat(101)).is_err());
        let email = Email::parse("grace@example.com").unwrap();
        assert_eq!(DisplayName::from_email(&email).as_str(), "grace");
    }
}
