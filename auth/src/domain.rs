//! Account values that parse, not validate: once you hold an [`Email`], a
//! [`DisplayName`] or a [`NewPassword`], it is valid.

use std::fmt;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest email accepted (RFC 5321 path limit).
pub const EMAIL_MAX_LEN: usize = 254;
/// Shortest password accepted, in characters (invisible ones not counted).
pub const PASSWORD_MIN_CHARS: usize = 10;
/// Longest password accepted, in bytes (argon2 would take more, but nobody needs it).
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// Longest display name accepted, in characters.
pub const DISPLAY_NAME_MAX_CHARS: usize = 100;

/// Letters that render as blank space though Unicode does not call them
/// whitespace: the Hangul fillers and the blank Braille pattern.
const BLANK_LETTERS: [char; 5] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{2800}'];

/// Control (`Cc`) or format (`Cf`: zero-width characters, bidi controls,
/// soft hyphen, tags) characters: they change or hide how text reads.
fn is_control_or_format(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control | GeneralCategory::Format
    )
}

/// Characters with no glyph of their own: whitespace and separators,
/// control and format characters, private use, unassigned and surrogate
/// code points, and the blank letters.
fn is_hidden(c: char) -> bool {
    use GeneralCategory::*;
    c.is_whitespace()
        || BLANK_LETTERS.contains(&c)
        || matches!(
            c.general_category(),
            Control
                | Format
                | SpaceSeparator
                | LineSeparator
                | ParagraphSeparator
                | PrivateUse
                | Unassigned
                | Surrogate
        )
}

/// A character that shows something by itself: not hidden, and not a
/// mark (a combining mark alone decorates nothing).
pub fn is_visible(c: char) -> bool {
    !is_hidden(c)
        && !matches!(
            c.general_category(),
            GeneralCategory::NonspacingMark | GeneralCategory::EnclosingMark
        )
}

/// An email address, normalised (see [`normalise_email`]) and checked: no
/// whitespace, control, format or other hidden characters, a local part of
/// at most 64 bytes, a domain that is valid IDNA in its ASCII (A-label)
/// form. Two addresses with the same normal form are the same account, and
/// so are two whose [`Email::skeleton`]s match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > 4 * EMAIL_MAX_LEN {
            return Err(format!("must be at most {EMAIL_MAX_LEN} bytes"));
        }
        let email = normalise_email(raw);
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.len() > EMAIL_MAX_LEN {
            return Err(format!("must be at most {EMAIL_MAX_LEN} bytes"));
        }
        if email.chars().any(is_hidden) {
            return Err(
                "must not contain spaces, control characters or invisible formatting \
                 characters (zero-width, bidi controls)"
                    .into(),
            );
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("must be an email address (name@domain)".into());
        };
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty()
            || local.len() > 64
            || local.contains('@')
            || !local.chars().any(is_visible)
            || !domain_ok
        {
            return Err("must be an email address (name@domain)".into());
        }
        // The domain is stored as IDNA A-labels (normalise_email converted
        // U-labels); it must be exactly what IDNA makes of it.
        if idna::domain_to_ascii_strict(domain).ok().as_deref() != Some(domain) {
            return Err("the domain must be a valid domain name (IDNA)".into());
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

    /// The confusable skeleton (Unicode TS #39) of the address, with the
    /// domain in its Unicode form: two addresses that look alike (`раypal`
    /// with a Cyrillic `р`, `a1ice` and `alice`) have the same skeleton, and
    /// auth keeps it unique, so they cannot be two accounts.
    pub fn skeleton(&self) -> String {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or((&self.0, ""));
        let (domain, _) = idna::domain_to_unicode(domain);
        unicode_security::skeleton(&format!("{local}@{domain}")).collect()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The normal form emails are stored, compared and rate-limited under
/// (shared with command-api, which resolves members by email).
pub use access::email::normalise_email;

/// How a user is shown to others: trimmed, at most 100 characters with at
/// least one visible, no control or format characters (the rules of
/// `service::text`, which titles and tags follow too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.chars().count() > DISPLAY_NAME_MAX_CHARS {
            return Err(format!(
                "must be at most {DISPLAY_NAME_MAX_CHARS} characters"
            ));
        }
        // The rules titles and tags follow too (service::text): no control,
        // format (a ZWJ only inside an emoji sequence), private-use or
        // unassigned characters; and a line separator would make it two lines.
        service::text::check_line(name)?;
        if name.chars().any(|c| {
            matches!(
                c.general_category(),
                GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
            )
        }) {
            return Err("must not contain a line or paragraph separator".into());
        }
        if service::text::visible_chars(name) == 0 {
            return Err("must not be blank (it needs a visible character)".into());
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

/// A password good enough to register with: at least 10 characters not
/// counting invisible ones (control and format characters, blank letters),
/// at least one of them visible, at most 1024 bytes. Its `Debug` does not
/// show it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.len() > PASSWORD_MAX_BYTES {
            return Err(format!("must be at most {PASSWORD_MAX_BYTES} bytes"));
        }
        let counted = raw
            .chars()
            .filter(|c| !is_control_or_format(*c) && !BLANK_LETTERS.contains(c))
            .count();
        if counted < PASSWORD_MIN_CHARS {
            return Err(format!(
                "must be at least {PASSWORD_MIN_CHARS} characters (invisible ones not counted)"
            ));
        }
        if !raw.chars().any(is_visible) {
            return Err("must not be only whitespace or invisible characters".into());
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
            ("ＡＤＡ@ＥＸＡＭＰＬＥ.com", Some("ada@example.com")),
            ("STRASSE@example.com", Some("strasse@example.com")),
            ("Straße@example.com", Some("strasse@example.com")),
            ("user@Bücher.example", Some("user@xn--bcher-kva.example")),
            (
                "user@xn--bcher-kva.example",
                Some("user@xn--bcher-kva.example"),
            ),
            ("ada\u{200B}@example.com", None),
            ("\u{202E}ada@example.com", None),
            ("ada@exa\u{200D}mple.com", None),
            ("\u{3164}@example.com", None),
            ("a@exa_mple.com", None),
            ("a@-example.com", None),
        ];
        for (raw, want) in cases {
            let got = Email::parse(raw).ok();
            assert_eq!(got.as_ref().map(Email::as_str), *want, "{raw:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn look_alike_emails_share_a_skeleton() {
        let skeleton = |s: &str| Email::parse(s).expect(s).skeleton();
        assert_eq!(
            skeleton("paypal@example.com"),
            skeleton("p\u{430}ypal@example.com")
        );
        assert_eq!(skeleton("alice@example.com"), skeleton("a1ice@example.com"));
        assert_eq!(
            skeleton("user@bücher.example"),
            skeleton("user@xn--bcher-kva.example")
        );
        assert_ne!(skeleton("alice@example.com"), skeleton("bob@example.com"));
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
            ("\u{200B}".repeat(12), false),
            ("\u{3164}".repeat(12), false),
            (format!("{}a", "\u{200B}".repeat(11)), false),
            ("\u{301}".repeat(12), false),
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
        for hidden in [
            "\u{200B}\u{200B}",
            "\u{3164}",
            "\u{2800}\u{2800}",
            "\u{301}",
        ] {
            assert!(DisplayName::parse(hidden).is_err(), "{hidden:?}");
        }
        assert!(DisplayName::parse("Ada\u{202E}ecal").is_err());
        assert_eq!(
            DisplayName::parse("Ada Lovelace").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert!(DisplayName::parse("José").is_ok());
        assert!(DisplayName::parse("Ada 👨\u{200D}👩\u{200D}👧").is_ok());
        assert!(DisplayName::parse("Ada\u{2028}Lovelace").is_err());
        assert!(DisplayName::parse(&"n".repeat(101)).is_err());
        let email = Email::parse("grace@example.com").unwrap();
        assert_eq!(DisplayName::from_email(&email).as_str(), "grace");
    }
}
