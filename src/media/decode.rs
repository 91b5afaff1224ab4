//! Bounded image decoding, shared by BlurHash placeholders and transforms: a small file can
//! claim a huge canvas (the decode-bomb case), so the header is checked against a pixel cap
//! before anything is allocated, and the decoder itself runs under size and memory limits.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use std::io::{BufRead, Seek};

/// Largest canvas decoded by default, in pixels (a 24-megapixel photo is well inside).
pub const MAX_PIXELS: u64 = 64 * 1000 * 1000;
/// Largest side decoded, in pixels.
pub const MAX_SIDE: u32 = 20_000;
/// Most memory one decode may allocate.
const MAX_ALLOC: u64 = 512 * 1024 * 1024;

/// The codecs built in (JPEG, PNG, GIF, WebP), by media type.
pub fn format(mime: &str) -> Option<ImageFormat> {
    match mime {
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Why an image was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// No decoder for this type (not an image, or a type not built in).
    Unsupported(String),
    /// The canvas is over the caps (a decode bomb, or just too big).
    TooLarge(String),
    /// The bytes are not a valid image of their type (or could not be read).
    Broken(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Unsupported(m) | DecodeError::TooLarge(m) | DecodeError::Broken(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Decodes the image in `reader` (of type `mime`) if its canvas is at most `max_pixels`
/// pixels and [`MAX_SIDE`] a side. With `orient`, the EXIF orientation is applied, so the
/// result is upright as a viewer shows it. Animated GIF and WebP give their first frame.
pub fn decode<R: BufRead + Seek>(
    reader: R,
    mime: &str,
    max_pixels: u64,
    orient: bool,
) -> Result<DynamicImage, DecodeError> {
    let fmt =
        format(mime).ok_or_else(|| DecodeError::Unsupported(format!("no decoder for {mime}")))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let mut r = ImageReader::with_format(reader, fmt);
    r.limits(limits);
    let too_large = |e: &image::ImageError| matches!(e, image::ImageError::Limits(_));
    let mut decoder = r.into_decoder().map_err(|e| {
        if too_large(&e) {
            DecodeError::TooLarge(format!("the image is too large: {e}"))
        } else {
            DecodeError::Broken(format!("cannot read the image header: {e}"))
        }
    })?;
    // The header's canvas first: nothing is allocated for a bomb.
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > max_pixels || w > MAX_SIDE || h > MAX_SIDE {
        return Err(DecodeError::TooLarge(format!(
            "{w}x{h} is larger than {max_pixels} pixels (or {MAX_SIDE} a side)"
        )));
    }
    let orientation = if orient {
        decoder.orientation().ok()
    } else {
        None
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| {
        if too_large(&e) {
            DecodeError::TooLarge(format!("the image is too large: {e}"))
        } else {
            DecodeError::Broken(format!("cannot decode: {e}"))
        }
    })?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img)
}
