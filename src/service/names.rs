//! Upload directories and file names: normalised, validated, made safe to echo.

use crate::error::{Error, Result};

/// Longest directory accepted, in bytes.
pub const MAX_DIRECTORY_LEN: usize = 1024;
/// Longest directory segment accepted, in bytes.
pub const MAX_SEGMENT_LEN: usize = 255;
/// Longest stored file name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// Turns the raw (still percent-encoded) path after `/upload` into a directory: `""` and `/`
/// are `/`; `/a/b/` is `/a/b`. Rejects `.`/`..`, empty segments, control characters, backslashes,
/// bad encodings and overlong paths with INVALID_PATH.
pub fn normalize_directory(raw: &str) -> Result<String> {
    normalize(raw, true)
}

/// The same rules for a directory that arrives already decoded (a query parameter): `%` is
/// then an ordinary character, not an escape.
pub fn normalize_decoded_directory(dir: &str) -> Result<String> {
    normalize(dir, false)
}

fn normalize(raw: &str, encoded: bool) -> Result<String> {
    let bad = |why: &str| Error::InvalidPath(format!("invalid directory: {why}"));
    if raw.len() > MAX_DIRECTORY_LEN * 3 {
        return Err(bad("too long"));
    }
    let trimmed = raw.strip_prefix('/').unwrap_or(raw);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    let mut out = String::with_capacity(raw.len());
    for seg in trimmed.split('/') {
        let seg = if encoded {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8()
                .map_err(|_| bad("not UTF-8"))?
        } else {
            seg.into()
        };
        if seg.is_empty() {
            return Err(bad("empty segment"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("relative segment"));
        }
        if seg.contains(['/', '\\']) {
            return Err(bad("encoded separator"));
        }
        if seg.chars().any(is_unsafe_char) {
            return Err(bad("control character"));
        }
        if seg.len() > MAX_SEGMENT_LEN {
            return Err(bad("segment too long"));
        }
        out.push('/');
        out.push_str(&seg);
    }
    if out.len() > MAX_DIRECTORY_LEN {
        return Err(bad("too long"));
    }
    Ok(out)
}

/// Control characters and the invisible formatting characters (bidi overrides such as U+202E,
/// zero-width joiners) that let a name look like something else.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Makes a client-supplied file name safe to store and echo: the last path component only,
/// unsafe characters dropped, at most [`MAX_NAME_CHARS`] (keeping the extension). Never empty.
pub fn sanitize_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = base.chars().filter(|c| !is_unsafe_char(*c)).collect();
    let cleaned = cleaned.trim();
    let cleaned = if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "file"
    } else {
        cleaned
    };
    if cleaned.chars().count() <= MAX_NAME_CHARS {
        return cleaned.to_string();
    }
    let ext: String = match extension(cleaned) {
        Some(e) => format!(".{e}"),
        None => String::new(),
    };
    let keep = MAX_NAME_CHARS - ext.chars().count();
    let stem: String = cleaned.chars().take(keep).collect();
    format!("{stem}{ext}")
}

/// The extension used in download paths: after the last dot, lower-case ASCII alphanumerics,
/// at most 16 characters; otherwise none.
pub fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.is_empty()
        || ext.is_empty()
        || ext.len() > 16
        || !ext.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories() {
        assert_eq!(normalize_directory("").unwrap(), "/");
        assert_eq!(normalize_directory("/").unwrap(), "/");
        assert_eq!(normalize_directory("/my/path").unwrap(), "/my/path");
        assert_eq!(normalize_directory("/my/path/").unwrap(), "/my/path");
        assert_eq!(normalize_directory("/caf%C3%A9").unwrap(), "/café");
        for bad in [
            "/a/../b",
            "/..",
            "/a//b",
            "/%2e%2e/x",
            "/a%2Fb",
            "/a%00",
            "/a\\b",
            "/%0d%0a",
            "/%FF",
        ] {
            assert!(normalize_directory(bad).is_err(), "{bad}");
        }
        assert!(normalize_directory(&format!("/{}", "a".repeat(300))).is_err());
        assert!(normalize_directory(&"/abc".repeat(300)).is_err());
        assert_eq!(normalize_decoded_directory("/a%2Fb").unwrap(), "/a%2Fb");
        assert!(normalize_decoded_directory("/a/../b").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\x\\y.txt"), "y.txt");
        assert_eq!(sanitize_filename("a\r\nb\u{202E}gpj.exe"), "abgpj.exe");
        assert_eq!(sanitize_filename(""), "file");
        assert_eq!(sanitize_filename(".."), "file");
        let long = format!("{}.png", "x".repeat(300));
        let s = sanitize_filename(&long);
        assert_eq!(s.chars().count(), MAX_NAME_CHARS);
        assert!(s.ends_with(".png"));
    }

    #[test]
    fn extensions() {
        assert_eq!(extension("logo.PNG").as_deref(), Some("png"));
        assert_eq!(extension("a.jpg.php").as_deref(), Some("php"));
        assert_eq!(extension("x.php%00.jpg").as_deref(), Some("jpg"));
        assert_eq!(extension(".bashrc"), None);
        assert_eq!(extension("noext"), None);
        assert_eq!(extension("a.b c"), None);
    }
}
