//! Image transforms (issue 16): `?w=320&h=240&fit=cover&format=webp&q=80` parsed against the
//! configured rules, normalized (so equal requests name one variant), and applied: a bounded
//! decode ([`super::decode`], EXIF orientation applied, first frame of an animation), a resize
//! with `fast_image_resize` (Lanczos3), and an encode with the `image` crate's encoders.
//!
//! Fit modes (the names sharp and imgproxy use):
//! - `cover`: exactly `w`x`h`, the image scaled to fill it and the overflow cropped (centred).
//! - `contain`: exactly `w`x`h`, the image scaled to fit inside, the rest transparent (white
//!   for JPEG, which has no alpha).
//! - `fill`: exactly `w`x`h`, the image stretched (the aspect ratio is not kept).
//! - `inside`: the image scaled to fit inside `w`x`h`, aspect ratio kept; the output may be
//!   smaller than the box on one side.
//!
//! With one of `w`/`h` the other follows from the aspect ratio (every fit is the same then);
//! with neither, the image keeps its size, reduced (never enlarged) to fit the largest allowed
//! box: a format conversion.

use super::decode::{self, DecodeError};
use crate::config::TransformsConfig;
use crate::error::{Error, Result, TransformFault};
use fast_image_resize::images::Image;
use fast_image_resize::{PixelType, ResizeOptions, Resizer};
use image::{ExtendedColorType, ImageEncoder};
use std::io::{BufRead, Seek};

/// How the image is fitted into the `w`x`h` box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Cover,
    Contain,
    Fill,
    Inside,
}

impl Fit {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cover" => Fit::Cover,
            "contain" => Fit::Contain,
            "fill" => Fit::Fill,
            "inside" => Fit::Inside,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Fit::Cover => "cover",
            Fit::Contain => "contain",
            Fit::Fill => "fill",
            Fit::Inside => "inside",
        }
    }
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    /// Lossless only: the `image` crate's WebP encoder (0.25) has no lossy mode.
    Webp,
    /// Known so it can be refused by name: no AVIF encoder is built in (see the README).
    Avif,
}

impl Format {
    /// Parses a format name (`jpg` is taken for `jpeg`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "jpeg" | "jpg" => Format::Jpeg,
            "png" => Format::Png,
            "webp" => Format::Webp,
            "avif" => Format::Avif,
            _ => return None,
        })
    }

    /// The format's name in parameters and keys.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Avif => "avif",
        }
    }

    /// The media type served.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
        }
    }

    /// The file extension of a variant's download name.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            other => other.name(),
        }
    }

    /// Whether `q` means anything for this format (the others are lossless).
    fn lossy(self) -> bool {
        matches!(self, Format::Jpeg | Format::Avif)
    }

    /// The format a source keeps when no `format` is asked for.
    fn of_source(mime: &str) -> Self {
        match mime {
            "image/jpeg" => Format::Jpeg,
            "image/webp" => Format::Webp,
            // PNG, and GIF (whose first frame is served as a still image).
            _ => Format::Png,
        }
    }
}

/// What may be asked for, from `[transforms]`.
#[derive(Debug, Clone)]
pub struct Rules {
    pub enabled: bool,
    widths: Vec<u32>,
    heights: Vec<u32>,
    formats: Vec<Format>,
    qualities: Vec<u8>,
    default_quality: u8,
    /// Largest source file, in bytes.
    pub max_input_bytes: u64,
    /// Largest source canvas, in pixels.
    pub max_input_pixels: u64,
}

impl Rules {
    /// The rules `[transforms]` sets; `Err` says what is wrong with it.
    pub fn from_config(c: &TransformsConfig) -> std::result::Result<Self, String> {
        let sizes = |name: &str, v: &[u32]| {
            if v.is_empty() {
                return Err(format!("{name} must list at least one size"));
            }
            match v.iter().find(|&&s| s == 0 || s > decode::MAX_SIDE) {
                Some(s) => Err(format!(
                    "{name}: {s} is not within 1..={}",
                    decode::MAX_SIDE
                )),
                None => Ok(v.to_vec()),
            }
        };
        let mut formats = Vec::new();
        for f in &c.formats {
            match Format::parse(f) {
                Some(Format::Avif) => {
                    return Err(
                        "formats: avif is not built into this binary (see the README)".into(),
                    )
                }
                Some(f) => formats.push(f),
                None => return Err(format!("formats: unknown format {f:?} (jpeg, png, webp)")),
            }
        }
        if !(1..=100).contains(&c.default_quality) {
            return Err("default_quality must be within 1..=100".into());
        }
        if c.qualities.iter().any(|q| !(1..=100).contains(q)) {
            return Err("qualities must be within 1..=100".into());
        }
        if c.timeout_secs == 0 || c.max_pending == 0 || c.max_input_bytes == 0 {
            return Err("timeout_secs, max_pending and max_input_bytes must be at least 1".into());
        }
        Ok(Self {
            enabled: c.enabled,
            widths: sizes("widths", &c.widths)?,
            heights: sizes("heights", &c.heights)?,
            formats,
            qualities: c.qualities.clone(),
            default_quality: c.default_quality,
            max_input_bytes: c.max_input_bytes,
            max_input_pixels: c.max_input_pixels.min(decode::MAX_PIXELS),
        })
    }

    /// Rules that refuse every transform (a configuration that did not validate).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            widths: vec![1],
            heights: vec![1],
            formats: Vec::new(),
            qualities: Vec::new(),
            default_quality: 80,
            max_input_bytes: 1,
            max_input_pixels: 1,
        }
    }

    /// The largest box a result may fill: no variant is larger than this.
    fn max_box(&self) -> (u32, u32) {
        (
            self.widths.iter().copied().max().unwrap_or(1),
            self.heights.iter().copied().max().unwrap_or(1),
        )
    }
}

/// A transform as asked for, checked against the rules; the output format is settled once the
/// source's type is known ([`Request::normalize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    width: Option<u32>,
    height: Option<u32>,
    fit: Option<Fit>,
    format: Option<Format>,
    quality: Option<u8>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Transform(TransformFault::InvalidParameter, msg.into())
}

/// The query parameters that ask for a transform.
const PARAMS: [&str; 5] = ["w", "h", "fit", "format", "q"];

impl Request {
    /// The transform a query string asks for: `None` when it names none of `w`, `h`, `fit`,
    /// `format`, `q` (a plain download; other parameters are left to others). A bad value, a
    /// repeated parameter, a size or format the rules do not allow is a 400 with its code.
    pub fn from_query(query: &str, rules: &Rules) -> Result<Option<Self>> {
        let mut req = Request {
            width: None,
            height: None,
            fit: None,
            format: None,
            quality: None,
        };
        let mut seen = [false; PARAMS.len()];
        let mut any = false;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let Some(i) = PARAMS.iter().position(|p| *p == k) else {
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(invalid(format!("{k} is given more than once")));
            }
            any = true;
            let num = |name: &str| -> Result<u32> {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid(format!("{name} must be a positive integer, not {v:?}")))
            };
            match k.as_ref() {
                "w" => req.width = Some(num("w")?),
                "h" => req.height = Some(num("h")?),
                "fit" => {
                    req.fit = Some(Fit::parse(&v).ok_or_else(|| {
                        invalid(format!(
                            "fit must be cover, contain, fill or inside, not {v:?}"
                        ))
                    })?)
                }
                "format" => {
                    let f = Format::parse(&v).ok_or_else(|| {
                        invalid(format!("format must be jpeg, png, webp or avif, not {v:?}"))
                    })?;
                    req.format = Some(f);
                }
                _ => {
                    let q = num("q")?;
                    if q > 100 {
                        return Err(invalid(format!("q must be within 1..=100, not {q}")));
                    }
                    req.quality = Some(q as u8);
                }
            }
        }
        if !any {
            return Ok(None);
        }
        if !rules.enabled {
            return Err(invalid("image transforms are turned off on this server"));
        }
        if let Some(w) = req.width.filter(|w| !rules.widths.contains(w)) {
            return Err(Error::Transform(
                TransformFault::SizeNotAllowed,
                format!(
                    "w={w} is not an allowed width (allowed: {:?})",
                    rules.widths
                ),
            ));
        }
        if let Some(h) = req.height.filter(|h| !rules.heights.contains(h)) {
            return Err(Error::Transform(
                TransformFault::SizeNotAllowed,
                format!(
                    "h={h} is not an allowed height (allowed: {:?})",
                    rules.heights
                ),
            ));
        }
        if let Some(f) = req.format {
            check_format(f, rules)?;
        }
        // Every quality is another variant: only listed ones (the default always is).
        if let Some(q) = req
            .quality
            .filter(|q| *q != rules.default_quality && !rules.qualities.contains(q))
        {
            return Err(Error::Transform(
                TransformFault::SizeNotAllowed,
                format!(
                    "q={q} is not an allowed quality (allowed: {:?})",
                    rules.qualities
                ),
            ));
        }
        Ok(Some(req))
    }

    /// The transform with every default filled in and every parameter that cannot change the
    /// output dropped, for a source of type `source_mime` (checked to be a decodable image).
    pub fn normalize(&self, source_mime: &str, rules: &Rules) -> Result<Params> {
        if super::is_active_content(source_mime) || decode::format(source_mime).is_none() {
            return Err(Error::Transform(
                TransformFault::NotAnImage,
                format!(
                    "a file of type {source_mime} cannot be transformed \
                     (JPEG, PNG, GIF and WebP images can)"
                ),
            ));
        }
        let format = self
            .format
            .unwrap_or_else(|| Format::of_source(source_mime));
        check_format(format, rules)?;
        let fit = match (self.width, self.height) {
            // Only with a whole box does the fit change anything.
            (Some(_), Some(_)) => self.fit.unwrap_or(Fit::Cover),
            _ => Fit::Inside,
        };
        let quality = if format.lossy() {
            self.quality.unwrap_or(rules.default_quality)
        } else {
            0
        };
        Ok(Params {
            width: self.width,
            height: self.height,
            fit,
            format,
            quality,
            max_box: rules.max_box(),
        })
    }
}

fn check_format(f: Format, rules: &Rules) -> Result<()> {
    if f == Format::Avif {
        return Err(Error::Transform(
            TransformFault::FormatNotAllowed,
            "format=avif is not available: this server is built without an AVIF encoder".into(),
        ));
    }
    if !rules.formats.contains(&f) {
        return Err(Error::Transform(
            TransformFault::FormatNotAllowed,
            format!("format={} is not allowed on this server", f.name()),
        ));
    }
    Ok(())
}

/// A normalized transform: what a variant is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub format: Format,
    /// 0 for lossless formats.
    pub quality: u8,
    /// The largest allowed box (bounds results made without `w` and `h`).
    max_box: (u32, u32),
}

impl Params {
    /// The canonical text of these parameters (part of the variant key).
    pub fn canonical(&self) -> String {
        let side = |v: Option<u32>| v.map_or_else(|| "auto".to_string(), |v| v.to_string());
        format!(
            "w={},h={},fit={},format={},q={}",
            side(self.width),
            side(self.height),
            self.fit.name(),
            self.format.name(),
            self.quality
        )
    }

    /// The output size for a source of `sw`x`sh`, and the size the image is scaled to inside
    /// it (smaller than the output only for `contain`).
    fn sizes(&self, sw: u32, sh: u32) -> Result<((u32, u32), (u32, u32))> {
        let scale = |n: u32, num: u32, den: u32| -> u32 {
            ((u64::from(n) * u64::from(num) + u64::from(den) / 2) / u64::from(den)).max(1) as u32
        };
        // The largest size of aspect sw:sh inside bw x bh.
        let inside = |bw: u32, bh: u32| -> (u32, u32) {
            if u64::from(bw) * u64::from(sh) <= u64::from(bh) * u64::from(sw) {
                (bw, scale(sh, bw, sw))
            } else {
                (scale(sw, bh, sh), bh)
            }
        };
        let out = match (self.width, self.height) {
            (Some(w), Some(h)) => match self.fit {
                Fit::Cover | Fit::Fill => ((w, h), (w, h)),
                Fit::Contain => ((w, h), inside(w, h)),
                Fit::Inside => {
                    let s = inside(w, h);
                    (s, s)
                }
            },
            (Some(w), None) => {
                let s = (w, scale(sh, w, sw));
                (s, s)
            }
            (None, Some(h)) => {
                let s = (scale(sw, h, sh), h);
                (s, s)
            }
            (None, None) => {
                let (bw, bh) = self.max_box;
                let s = if sw <= bw && sh <= bh {
                    (sw, sh)
                } else {
                    inside(bw, bh)
                };
                (s, s)
            }
        };
        // One given side of a very long image makes the other huge: bounded by the largest
        // allowed box's area.
        let (bw, bh) = self.max_box;
        let (ow, oh) = out.0;
        if u64::from(ow) * u64::from(oh) > u64::from(bw) * u64::from(bh)
            || ow > decode::MAX_SIDE
            || oh > decode::MAX_SIDE
        {
            return Err(Error::Transform(
                TransformFault::ImageTooLarge,
                format!("the result would be {ow}x{oh} pixels, more than a {bw}x{bh} box holds"),
            ));
        }
        Ok(out)
    }
}

/// A computed variant's bytes.
#[derive(Debug)]
pub struct Output {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

fn undecodable(e: DecodeError) -> Error {
    match e {
        DecodeError::Unsupported(m) => Error::Transform(TransformFault::NotAnImage, m),
        DecodeError::TooLarge(m) => Error::Transform(TransformFault::ImageTooLarge, m),
        DecodeError::Broken(m) => Error::Transform(TransformFault::Undecodable, m),
    }
}

fn resize_failed(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("image resize failed: {e}"))
}

/// Decodes the image in `reader` (of type `mime`, within `max_pixels`), applies `p` and
/// encodes the result. CPU-bound and blocking: run it in a decode lane on the blocking pool.
pub fn apply<R: BufRead + Seek>(
    reader: R,
    mime: &str,
    max_pixels: u64,
    p: &Params,
) -> Result<Output> {
    let img = decode::decode(reader, mime, max_pixels, true).map_err(undecodable)?;
    let (sw, sh) = (img.width(), img.height());
    let ((ow, oh), (iw, ih)) = p.sizes(sw, sh)?;
    // JPEG has no alpha: flatten onto white before resizing (so `contain` pads white too).
    // Other formats keep the alpha, and gain one when `contain` pads (transparent bars).
    let padded = (iw, ih) != (ow, oh);
    let alpha = (img.color().has_alpha() || padded) && p.format != Format::Jpeg;
    let (src, pixel) = if alpha {
        (img.into_rgba8().into_raw(), PixelType::U8x4)
    } else if img.color().has_alpha() {
        (flatten_white(img.into_rgba8()), PixelType::U8x3)
    } else {
        (img.into_rgb8().into_raw(), PixelType::U8x3)
    };
    let src = Image::from_vec_u8(sw, sh, src, pixel).map_err(resize_failed)?;
    let mut scaled = Image::new(iw, ih, pixel);
    let mut opts = ResizeOptions::new();
    if p.fit == Fit::Cover && p.width.is_some() && p.height.is_some() {
        opts = opts.fit_into_destination(Some((0.5, 0.5)));
    }
    Resizer::new()
        .resize(&src, &mut scaled, &opts)
        .map_err(resize_failed)?;
    drop(src);
    let buf = if !padded {
        scaled.into_vec()
    } else {
        pad(&scaled.into_vec(), (iw, ih), (ow, oh), pixel.size())
    };
    let color = if alpha {
        ExtendedColorType::Rgba8
    } else {
        ExtendedColorType::Rgb8
    };
    let mut bytes = Vec::new();
    let encoded = match p.format {
        Format::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, p.quality)
            .write_image(&buf, ow, oh, color),
        Format::Png => {
            image::codecs::png::PngEncoder::new(&mut bytes).write_image(&buf, ow, oh, color)
        }
        Format::Webp => image::codecs::webp::WebPEncoder::new_lossless(&mut bytes)
            .write_image(&buf, ow, oh, color),
        Format::Avif => {
            return Err(Error::Transform(
                TransformFault::FormatNotAllowed,
                "no AVIF encoder is built in".into(),
            ))
        }
    };
    encoded.map_err(|e| Error::Internal(format!("image encode failed: {e}")))?;
    Ok(Output {
        bytes,
        width: ow,
        height: oh,
    })
}

/// RGBA over a white background, as RGB.
fn flatten_white(img: image::RgbaImage) -> Vec<u8> {
    let mut out = Vec::with_capacity(img.width() as usize * img.height() as usize * 3);
    for px in img.pixels() {
        let a = u16::from(px[3]);
        for c in &px.0[..3] {
            out.push(((u16::from(*c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    out
}

/// `inner` (of size `isz`, `bpp` bytes a pixel) centred on a canvas of `osz`: transparent
/// with alpha, white without.
fn pad(inner: &[u8], isz: (u32, u32), osz: (u32, u32), bpp: usize) -> Vec<u8> {
    let fill = if bpp == 4 { 0 } else { 255 };
    let (ow, oh) = (osz.0 as usize, osz.1 as usize);
    let (iw, ih) = (isz.0 as usize, isz.1 as usize);
    let mut out = vec![fill; ow * oh * bpp];
    let (x0, y0) = ((ow - iw) / 2, (oh - ih) / 2);
    for y in 0..ih {
        let src = &inner[y * iw * bpp..(y + 1) * iw * bpp];
        let at = ((y0 + y) * ow + x0) * bpp;
        out[at..at + iw * bpp].copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::from_config(&TransformsConfig::default()).unwrap()
    }

    fn code(e: Error) -> &'static str {
        e.code()
    }

    #[test]
    fn parameters_parse_and_normalize() {
        let r = rules();
        assert!(Request::from_query("", &r).unwrap().is_none());
        assert!(Request::from_query("download=1", &r).unwrap().is_none());
        let q = Request::from_query("w=320&h=240&fit=cover&format=webp&q=80", &r)
            .unwrap()
            .unwrap();
        let p = q.normalize("image/jpeg", &r).unwrap();
        // WebP is lossless: q does not make another variant.
        assert_eq!(p.canonical(), "w=320,h=240,fit=cover,format=webp,q=0");
        let only_w = Request::from_query("w=320&fit=fill", &r).unwrap().unwrap();
        assert_eq!(
            only_w.normalize("image/jpeg", &r).unwrap().canonical(),
            "w=320,h=auto,fit=inside,format=jpeg,q=80"
        );
        for (q, want) in [
            ("w=0", "INVALID_TRANSFORM"),
            ("w=abc", "INVALID_TRANSFORM"),
            ("w=320&w=640", "INVALID_TRANSFORM"),
            ("fit=squash", "INVALID_TRANSFORM"),
            ("q=101", "INVALID_TRANSFORM"),
            ("q=0", "INVALID_TRANSFORM"),
            ("q=55", "SIZE_NOT_ALLOWED"),
            ("format=bmp", "INVALID_TRANSFORM"),
            ("w=321", "SIZE_NOT_ALLOWED"),
            ("h=10000", "SIZE_NOT_ALLOWED"),
            ("format=avif", "FORMAT_NOT_ALLOWED"),
        ] {
            assert_eq!(code(Request::from_query(q, &r).unwrap_err()), want, "{q}");
        }
        let any = Request::from_query("w=320", &r).unwrap().unwrap();
        assert_eq!(
            code(any.normalize("image/svg+xml", &r).unwrap_err()),
            "NOT_AN_IMAGE"
        );
        assert_eq!(
            code(any.normalize("text/plain", &r).unwrap_err()),
            "NOT_AN_IMAGE"
        );
    }

    #[test]
    fn sizes_per_fit() {
        let r = rules();
        let p = |q: &str| {
            Request::from_query(q, &r)
                .unwrap()
                .unwrap()
                .normalize("image/png", &r)
                .unwrap()
        };
        let s = |q: &str| p(q).sizes(1000, 500).unwrap();
        assert_eq!(s("w=320&h=240&fit=cover"), ((320, 240), (320, 240)));
        assert_eq!(s("w=320&h=240&fit=fill"), ((320, 240), (320, 240)));
        assert_eq!(s("w=320&h=240&fit=contain"), ((320, 240), (320, 160)));
        assert_eq!(s("w=320&h=240&fit=inside"), ((320, 160), (320, 160)));
        assert_eq!(s("w=320"), ((320, 160), (320, 160)));
        assert_eq!(s("h=240"), ((480, 240), (480, 240)));
        // Format only: kept as it is when inside the largest box.
        assert_eq!(s("format=webp"), ((1000, 500), (1000, 500)));
        // A 1 x 20000 strip asked 1920 wide would be 38 megapixels: refused.
        assert!(p("w=1920").sizes(1, 20_000).is_err());
    }
}
