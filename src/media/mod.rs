//! What a file is: media type from its bytes (infer), else its name (mime_guess); image size.
//! Everything here works on the first bytes of a file it is given, never on a path, so it runs
//! the same whatever the storage backend.

pub mod blurhash;
pub mod decode;
pub mod transform;

/// Bytes from the start of a file that probing is given: enough for the type and for image
/// headers (a JPEG's size comes after its EXIF/ICC segments, each up to 64 KiB).
pub const PROBE_LEN: usize = 256 * 1024;

/// The media type of a file: from its first bytes when they are recognisable, else from the
/// name's extension, else `application/octet-stream`.
pub fn sniff(head: &[u8], name: &str) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

/// Whether a type can run script when a browser renders it inline (HTML, SVG, XML, JS).
pub fn is_active_content(mime: &str) -> bool {
    let essence = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "text/xml"
            | "application/xml"
            | "text/javascript"
            | "application/javascript"
            | "application/x-javascript"
            | "application/ecmascript"
            | "text/ecmascript"
            | "application/x-shockwave-flash"
            | "text/xsl"
    ) || essence.ends_with("+xml")
}

/// Whether a type is a raster image we record an Image for.
pub fn is_image(mime: &str) -> bool {
    mime.starts_with("image/") && !is_active_content(mime)
}

/// Width and height of an image from its first bytes; `None` when they do not hold its header
/// (not an image, or a header larger than [`PROBE_LEN`]).
pub fn dimensions(head: &[u8]) -> Option<(u32, u32)> {
    let size = imagesize::blob_size(head).ok()?;
    Some((
        u32::try_from(size.width).ok()?,
        u32::try_from(size.height).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_beat_the_name() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png, "evil.html"), "image/png");
        assert_eq!(sniff(b"hello", "notes.txt"), "text/plain");
        assert_eq!(sniff(b"<svg/>", "x.svg"), "image/svg+xml");
        assert_eq!(sniff(b"\x00\x01", "noext"), "application/octet-stream");
    }

    #[test]
    fn active_types() {
        assert!(is_active_content("text/html; charset=utf-8"));
        assert!(is_active_content("image/svg+xml"));
        assert!(!is_active_content("image/png"));
        assert!(!is_image("image/svg+xml"));
    }

    #[test]
    fn dimensions_from_the_first_bytes() {
        // A 3x2 PNG's signature and IHDR chunk: all a probe needs.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&3u32.to_be_bytes());
        png.extend_from_slice(&2u32.to_be_bytes());
        png.extend_from_slice(&[8, 6, 0, 0, 0]);
        assert_eq!(dimensions(&png), Some((3, 2)));
        assert_eq!(dimensions(&png[..10]), None, "truncated header");
        assert_eq!(dimensions(b"plain text"), None);
    }
}
