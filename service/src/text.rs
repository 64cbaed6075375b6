//! Text hygiene for short, single-line values people read (titles, tags,
//! display names): no control characters, no invisible format characters
//! (zero-width spaces, bidirectional overrides that make text read
//! differently from how it is stored), and "not empty" means at least one
//! visible character, not a string of blanks that merely look like content.

use unicode_properties::{
    GeneralCategory, GeneralCategoryGroup, UnicodeEmoji, UnicodeGeneralCategory,
};

/// Letters that render as nothing (Hangul fillers, the braille blank, ...):
/// Unicode calls them letters or symbols, a reader sees an empty field.
const BLANK_LOOKALIKES: [char; 6] = [
    '\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{2800}', '\u{180E}',
];

/// Refuses control characters (Cc), format characters (Cf), surrogates,
/// private-use and unassigned code points. A zero-width joiner is allowed
/// only inside an emoji sequence (between two symbols), where it is how
/// such emoji are written.
pub fn check_line(s: &str) -> Result<(), String> {
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let bad = match c.general_category() {
            GeneralCategory::Control => Some("a control character"),
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
                Some("a line or paragraph separator")
            }
            GeneralCategory::Format => {
                let joins_emoji = c == '\u{200D}'
                    && i > 0
                    && ends_emoji(&chars[..i])
                    && chars.get(i + 1).is_some_and(|n| n.is_emoji_char());
                (!joins_emoji).then_some("an invisible format character")
            }
            GeneralCategory::Surrogate | GeneralCategory::PrivateUse => {
                Some("a private-use character")
            }
            GeneralCategory::Unassigned => Some("an unassigned code point"),
            _ => None,
        };
        if let Some(what) = bad {
            return Err(format!("must not contain {what} (U+{:04X})", c as u32));
        }
    }
    Ok(())
}

/// Whether `before` ends with an emoji, possibly followed by emoji
/// components (variation selectors, skin tones) and marks.
fn ends_emoji(before: &[char]) -> bool {
    before
        .iter()
        .rev()
        .find(|c| {
            !(c.general_category_group() == GeneralCategoryGroup::Mark
                || (c.is_emoji_component() && !c.is_ascii()))
        })
        .is_some_and(|c| c.is_emoji_char() && !c.is_ascii())
}

/// How many characters a reader sees: letters, numbers, punctuation and
/// symbols, less the blank look-alikes. Spaces, marks on their own and
/// format characters do not count.
pub fn visible_chars(s: &str) -> usize {
    s.chars()
        .filter(|c| {
            matches!(
                c.general_category_group(),
                GeneralCategoryGroup::Letter
                    | GeneralCategoryGroup::Number
                    | GeneralCategoryGroup::Punctuation
                    | GeneralCategoryGroup::Symbol
            ) && !BLANK_LOOKALIKES.contains(c)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_format_characters_are_refused() {
        for bad in [
            "a\u{0007}b",
            "tab\there",
            "zero\u{200B}width",
            "evil\u{202E}txt.exe",
            "\u{2066}isolate",
            "soft\u{00AD}hyphen",
            "bom\u{FEFF}",
            "private\u{E000}",
            "line\u{2028}break",
            "pay\u{FE0F}\u{200D}\u{FE0F}roll",
            "a\u{200D}b",
        ] {
            assert!(check_line(bad).is_err(), "{bad:?}");
        }
        for good in [
            "Ship the release",
            "Überprüfung – 2. Runde",
            "修复登录",
            "café",
            "family 👨\u{200D}👩\u{200D}👧",
            "flag 🏳\u{FE0F}\u{200D}🌈",
        ] {
            assert!(check_line(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn only_visible_characters_count() {
        assert_eq!(visible_chars("   "), 0);
        assert_eq!(visible_chars("\u{3164}\u{3164}"), 0);
        assert_eq!(visible_chars("\u{2800}"), 0);
        assert_eq!(visible_chars("\u{0301}\u{0301}"), 0);
        assert_eq!(visible_chars("a b"), 2);
        assert_eq!(visible_chars("👍"), 1);
    }
}
