//! RFC 6266 Content-Disposition with an ASCII fallback and an RFC 8187 `filename*`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// RFC 8187 attr-char: everything else is percent-encoded.
const ATTR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Builds the header value. `inline` is false for content that must be saved, not rendered.
pub fn content_disposition(name: &str, inline: bool) -> String {
    let kind = if inline { "inline" } else { "attachment" };
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' && c != '%' => c,
            _ => '_',
        })
        .collect();
    let encoded = utf8_percent_encode(name, ATTR);
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_safely() {
        assert_eq!(
            content_disposition("logo.png", true),
            "inline; filename=\"logo.png\"; filename*=UTF-8''logo.png"
        );
        let v = content_disposition("a\"b\r\n€.html", false);
        assert!(v.starts_with("attachment; filename=\"a_b___.html\""), "{v}");
        assert!(
            v.ends_with("filename*=UTF-8''a%22b%0D%0A%E2%82%AC.html"),
            "{v}"
        );
        assert!(!v.contains('\r') && !v.contains('\n'));
    }
}
