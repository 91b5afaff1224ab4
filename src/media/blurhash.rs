//! BlurHash placeholders (Foir's `blurhash`): the image is decoded with bounds on its size and
//! on memory (a small file can claim a huge canvas: the decode-bomb case), downscaled, and
//! encoded with the `blurhash` crate.

use super::decode;
use std::io::{BufRead, Seek};

/// Largest canvas decoded, in pixels (a 24-megapixel photo is well inside).
pub const MAX_PIXELS: u64 = decode::MAX_PIXELS;
/// The image is reduced to at most this many pixels a side before encoding: a BlurHash of
/// 4x3 components needs no more.
const THUMB: u32 = 64;

/// Components of the hash (Foir's and Wolt's default: 4 across, 3 down).
const COMPONENTS: (u32, u32) = (4, 3);

/// Whether [`describe`] can decode this type.
pub fn decodable(mime: &str) -> bool {
    decode::format(mime).is_some()
}

/// A decoded image's size and BlurHash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub width: u32,
    pub height: u32,
    pub blurhash: String,
}

/// Decodes the image in `reader` (of type `mime`) within the bounds above and computes its
/// BlurHash. `Err` says why not (unsupported type, too large, broken): the caller keeps the
/// file without a placeholder.
pub fn describe<R: BufRead + Seek>(reader: R, mime: &str) -> Result<Described, String> {
    // Stored orientation, as the dimensions recorded for the File are.
    let img = decode::decode(reader, mime, MAX_PIXELS, false).map_err(|e| e.to_string())?;
    let small = img.thumbnail(THUMB, THUMB).to_rgba8();
    let blurhash = ::blurhash::encode(
        COMPONENTS.0,
        COMPONENTS.1,
        small.width(),
        small.height(),
        small.as_raw(),
    )
    .map_err(|e| format!("cannot encode the blurhash: {e}"))?;
    Ok(Described {
        width: img.width(),
        height: img.height(),
        blurhash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;
    use std::io::Cursor;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut img = image::RgbaImage::new(w, h);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgba([(x * 255 / w) as u8, (y * 255 / h) as u8, 128, 255]);
        }
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_real_blurhash_of_a_decoded_image() {
        let d = describe(Cursor::new(png(40, 30)), "image/png").unwrap();
        assert_eq!((d.width, d.height), (40, 30));
        // 4x3 components: 1 + 1 + 4 + 2 * (4 * 3 - 1) characters.
        assert_eq!(d.blurhash.len(), 28, "{}", d.blurhash);
    }

    #[test]
    fn bombs_and_junk_are_refused() {
        // A PNG header claiming 30000 x 30000 pixels, with no data behind it.
        let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        bomb.extend_from_slice(&30000u32.to_be_bytes());
        bomb.extend_from_slice(&30000u32.to_be_bytes());
        bomb.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        assert!(describe(Cursor::new(bomb), "image/png").is_err());
        assert!(describe(Cursor::new(b"not an image".to_vec()), "image/png").is_err());
        assert!(describe(Cursor::new(png(2, 2)), "text/plain").is_err());
    }
}
