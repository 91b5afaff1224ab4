//! Upload paths and file names: no input panics; what is accepted is safe.
#![no_main]

use depot::service::names::{extension, normalize_directory, sanitize_filename};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    if let Ok(d) = normalize_directory(raw) {
        assert!(d.starts_with('/'));
        assert!(!d.contains("//") && !d.contains('\\'));
        assert!(!d.split('/').any(|s| s == "." || s == ".."));
        assert!(!d.chars().any(char::is_control));
    }
    let name = sanitize_filename(raw);
    assert!(!name.is_empty() && name.chars().count() <= 255);
    assert!(!name.contains(['/', '\\']) && !name.chars().any(char::is_control));
    if let Some(e) = extension(raw) {
        assert!(!e.is_empty() && e.len() <= 16);
    }
});
