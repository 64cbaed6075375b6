//! The normal form of an email address, shared by auth (which stores and
//! compares addresses under it) and command-api (which finds a project's
//! new member by the address a client typed): one function, so both sides
//! agree on which account an address names.

use unicode_normalization::UnicodeNormalization;

/// The normal form emails are stored, compared and rate-limited under,
/// applied even to input that is not a valid address: trimmed, NFKC with
/// full case folding (so `ＡＤＡ@…`, `Ada@…` and `ada@…` are one address,
/// as are `STRASSE` and `straße`), and a non-ASCII domain converted to IDNA
/// A-labels (`bücher.example` → `xn--bcher-kva.example`) when it is valid.
pub fn normalise_email(raw: &str) -> String {
    let nfkc: String = raw.trim().nfkc().collect();
    let folded: String = caseless::default_case_fold_str(&nfkc).nfkc().collect();
    match folded.rsplit_once('@') {
        Some((local, domain)) if !domain.is_ascii() => match idna::domain_to_ascii_strict(domain) {
            Ok(ascii) => format!("{local}@{ascii}"),
            Err(_) => folded,
        },
        _ => folded,
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_email;

    #[test]
    fn case_width_and_idna_forms_are_one_address() {
        assert_eq!(normalise_email("  Ada@Example.TEST "), "ada@example.test");
        assert_eq!(normalise_email("ＡＤＡ@example.test"), "ada@example.test");
        assert_eq!(
            normalise_email("STRASSE@x.test"),
            normalise_email("straße@x.test")
        );
        assert_eq!(
            normalise_email("a@bücher.example"),
            "a@xn--bcher-kva.example"
        );
    }
}
