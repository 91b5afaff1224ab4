//! Property tests of the pure parsers that see raw client input: upload directories, file names,
//! extensions and Range headers, and the ArcQL wildcard matcher. No input may panic; accepted
//! output must be safe.

use depot::http::range::{parse, RangeRequest};
use depot::service::names::{
    extension, normalize_decoded_directory, normalize_directory, sanitize_filename,
    MAX_DIRECTORY_LEN, MAX_NAME_CHARS, MAX_SEGMENT_LEN,
};
use depot::service::query::arcql::glob::{self, Glob};
use proptest::prelude::*;

/// 500 cases keep `cargo test` quick; `PROPTEST_CASES` (the README's long form) overrides it.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 500;
    }
    c
}

/// Characters that let a name or path look like something else, or break a header or a log.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Path-like input built from the pieces attacks are made of, so the interesting cases are
/// common rather than one in a billion.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("//".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%2F".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("\\".to_string()),
        Just("%00".to_string()),
        Just("%0d%0a".to_string()),
        Just("%".to_string()),
        Just("%2".to_string()),
        Just("%25".to_string()),
        Just("%C3%A9".to_string()),
        Just("%C3".to_string()),
        Just("%FF".to_string()),
        Just("%E2%80%AE".to_string()),
        Just("\u{202E}".to_string()),
        Just("\r\n".to_string()),
        Just(" ".to_string()),
        "[a-zA-Z0-9_-]{1,8}",
        "[a-z]{200,300}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|v| v.concat())
}

fn hostile_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("\\".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("\r\n".to_string()),
        Just("\0".to_string()),
        Just("\"".to_string()),
        Just("\u{202E}".to_string()),
        Just("\u{200B}".to_string()),
        Just("\u{FEFF}".to_string()),
        Just("é".to_string()),
        Just(".php".to_string()),
        Just(".jpg".to_string()),
        Just("%00".to_string()),
        "[a-zA-Z0-9]{1,10}",
        "[a-z]{100,300}",
        "[\u{80}-\u{10FFFF}]{1,5}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..20).prop_map(|v| v.concat())
}

fn check_directory(raw: &str) -> Result<(), TestCaseError> {
    check_directory_result(raw, normalize_directory(raw))?;
    check_directory_result(raw, normalize_decoded_directory(raw))
}

fn check_directory_result(
    raw: &str,
    result: depot::error::Result<String>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(d) => {
            prop_assert!(d.starts_with('/'), "{raw:?} -> {d:?}");
            prop_assert!(d == "/" || !d.ends_with('/'), "{raw:?} -> {d:?}");
            prop_assert!(!d.contains("//"), "{raw:?} -> {d:?}");
            prop_assert!(!d.contains('\\'), "{raw:?} -> {d:?}");
            prop_assert!(!d.chars().any(unsafe_char), "{raw:?} -> {d:?}");
            prop_assert!(d.len() <= MAX_DIRECTORY_LEN, "{raw:?} -> {} bytes", d.len());
            for seg in d.split('/').skip(1).filter(|_| d != "/") {
                prop_assert!(seg != "." && seg != "..", "{raw:?} -> {d:?}");
                prop_assert!(!seg.is_empty(), "{raw:?} -> {d:?}");
                prop_assert!(seg.len() <= MAX_SEGMENT_LEN, "{raw:?} -> {d:?}");
            }
            prop_assert!(!d.split('/').any(|s| s == ".."), "{raw:?} -> {d:?}");
        }
        Err(e) => prop_assert_eq!(e.code(), "INVALID_PATH", "{:?}", raw),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn directories_from_any_string_are_safe_or_refused(raw in any::<String>()) {
        check_directory(&raw)?;
    }

    #[test]
    fn directories_from_hostile_pieces_are_safe_or_refused(raw in hostile_path()) {
        check_directory(&raw)?;
    }

    #[test]
    fn plain_directories_are_kept(segs in prop::collection::vec("[a-zA-Z0-9_-]{1,20}", 0..10),
                                  lead in any::<bool>(), trail in any::<bool>()) {
        let joined = segs.join("/");
        let raw = format!("{}{joined}{}", if lead { "/" } else { "" }, if trail { "/" } else { "" });
        let d = normalize_directory(&raw).unwrap();
        prop_assert_eq!(d, format!("/{joined}"));
    }

    #[test]
    fn accepted_directories_without_percent_are_fixed_points(raw in hostile_path()) {
        if let Ok(d) = normalize_directory(&raw) {
            if !d.contains('%') {
                prop_assert_eq!(normalize_directory(&d).unwrap(), d);
            }
        }
    }

    #[test]
    fn decoded_directories_are_fixed_points(raw in hostile_path()) {
        // A listing filter is compared with stored directories as is: what the filter accepts
        // must come back unchanged, `%` included.
        if let Ok(d) = normalize_decoded_directory(&raw) {
            prop_assert_eq!(normalize_decoded_directory(&d).unwrap(), d);
        }
    }

    #[test]
    fn both_directory_forms_agree_without_escapes(raw in hostile_path()) {
        let raw = raw.replace('%', "");
        prop_assert_eq!(
            normalize_directory(&raw).ok(),
            normalize_decoded_directory(&raw).ok()
        );
    }

    #[test]
    fn sanitized_names_are_safe(raw in hostile_name()) {
        check_name(&raw)?;
    }

    #[test]
    fn sanitized_names_from_any_string_are_safe(raw in any::<String>()) {
        check_name(&raw)?;
    }

    #[test]
    fn plain_names_are_kept(name in "[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,200}") {
        prop_assume!(name != "." && name != "..");
        prop_assert_eq!(sanitize_filename(&name), name);
    }

    #[test]
    fn truncation_keeps_the_extension(stem in "[a-z]{1,600}", ext in "[a-z0-9]{1,16}") {
        let s = sanitize_filename(&format!("{stem}.{ext}"));
        prop_assert!(s.chars().count() <= MAX_NAME_CHARS);
        prop_assert_eq!(extension(&s), Some(ext));
    }

    #[test]
    fn extensions_are_short_lower_case_alphanumerics(raw in any::<String>()) {
        if let Some(e) = extension(&raw) {
            prop_assert!(!e.is_empty() && e.len() <= 16, "{raw:?} -> {e:?}");
            prop_assert!(e.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()), "{e:?}");
            prop_assert!(raw.to_ascii_lowercase().ends_with(&format!(".{e}")), "{raw:?} -> {e:?}");
        }
    }

    #[test]
    fn extensions_of_hostile_names(raw in hostile_name()) {
        if let Some(e) = extension(&raw) {
            prop_assert!(!e.is_empty() && e.len() <= 16 && !e.contains(['.', '/', '\\', '\0']));
        }
    }

    #[test]
    fn range_parse_never_panics_and_stays_in_bounds(header in any::<String>(), len in any::<u64>()) {
        check_range(&header, len)?;
    }

    #[test]
    fn range_parse_of_range_like_headers(
        header in r"[ ]?(bytes|Bytes|items)=[ ]?[0-9]{0,22}[ ]?-?[ ]?[0-9]{0,22}(,[0-9]{0,3}-[0-9]{0,3})?[ ]?",
        len in prop_oneof![Just(0u64), 1u64..100, any::<u64>(), Just(u64::MAX)],
    ) {
        check_range(&header, len)?;
    }

    #[test]
    fn closed_ranges_mean_what_they_say(s in any::<u64>(), e in any::<u64>(), len in 0u64..1_000_000) {
        let got = parse(&format!("bytes={s}-{e}"), len);
        let want = if s > e {
            RangeRequest::Full
        } else if s >= len {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Partial { start: s, end: e.min(len - 1) }
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn open_and_suffix_ranges_mean_what_they_say(n in any::<u64>(), len in any::<u64>()) {
        let open = parse(&format!("bytes={n}-"), len);
        if n >= len {
            prop_assert_eq!(open, RangeRequest::Unsatisfiable);
        } else {
            prop_assert_eq!(open, RangeRequest::Partial { start: n, end: len - 1 });
        }
        let suffix = parse(&format!("bytes=-{n}"), len);
        if n == 0 {
            prop_assert_eq!(suffix, RangeRequest::Unsatisfiable);
        } else if len == 0 {
            // A suffix of an empty file selects the whole (empty) file: 200.
            prop_assert_eq!(suffix, RangeRequest::Full);
        } else {
            prop_assert_eq!(suffix, RangeRequest::Partial { start: len - n.min(len), end: len - 1 });
        }
    }
}

fn check_name(raw: &str) -> Result<(), TestCaseError> {
    let s = sanitize_filename(raw);
    prop_assert!(!s.is_empty(), "{raw:?}");
    prop_assert!(s != "." && s != "..", "{raw:?} -> {s:?}");
    prop_assert!(!s.contains(['/', '\\']), "{raw:?} -> {s:?}");
    prop_assert!(!s.chars().any(unsafe_char), "{raw:?} -> {s:?}");
    prop_assert!(
        s.chars().count() <= MAX_NAME_CHARS,
        "{raw:?} -> {} chars",
        s.chars().count()
    );
    prop_assert!(!s.starts_with(char::is_whitespace), "{raw:?} -> {s:?}");
    // Sanitizing is stable for names that needed no truncation.
    if s.chars().count() < MAX_NAME_CHARS {
        prop_assert_eq!(sanitize_filename(&s), s.clone(), "{:?}", raw);
    }
    Ok(())
}

fn check_range(header: &str, len: u64) -> Result<(), TestCaseError> {
    match parse(header, len) {
        RangeRequest::Partial { start, end } => {
            prop_assert!(start <= end, "{header:?} of {len}: {start}-{end}");
            prop_assert!(end < len, "{header:?} of {len}: {start}-{end}");
        }
        RangeRequest::Unsatisfiable => {
            // The unit is case-insensitive (RFC 9110 section 14.1).
            let unit = header.trim().get(..6);
            prop_assert!(
                unit.is_some_and(|u| u.eq_ignore_ascii_case("bytes=")),
                "{header:?}"
            );
        }
        RangeRequest::Full => {}
    }
    Ok(())
}

/// The textbook dynamic program for `*`/`?` globs: `m[i][j]` says whether the first `i`
/// pattern characters match the first `j` text characters. Quadratic, obviously right.
fn glob_reference(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=t.len() {
            m[i][j] = match p[i - 1] {
                '*' => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                c => j > 0 && m[i - 1][j - 1] && (c == '?' || c == t[j - 1]),
            };
        }
    }
    m[p.len()][t.len()]
}

/// A pattern of `len` characters made of stars, `?`, and letters likely to occur in the text.
fn glob_pattern(len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![Just('*'), Just('?'), Just('a'), Just('b'), Just('é')],
        0..len,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(config())]

    /// The linear-time matcher agrees with the reference, also on patterns of more than 64
    /// fixed characters (several words of state) and texts of hundreds of characters.
    #[test]
    fn glob_agrees_with_reference(p in glob_pattern(130), t in "[abé]{0,200}") {
        prop_assert_eq!(glob::matches(&p, &t), glob_reference(&p, &t), "{:?} {:?}", p, t);
    }

    /// Texts built to match (the pattern with its wildcards filled in) do match, so the
    /// agreement above is not only about rejections.
    #[test]
    fn glob_matches_its_own_instances(p in glob_pattern(150), fill in "[abé]{0,4}") {
        let t: String = p
            .chars()
            .map(|c| match c {
                '*' => fill.clone(),
                '?' => "a".to_string(),
                c => c.to_string(),
            })
            .collect();
        prop_assert!(Glob::new(&p).matches(&t), "{:?} {:?}", p, t);
        prop_assert!(glob_reference(&p, &t));
    }
}
