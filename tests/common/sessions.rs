//! Helpers for the direct upload flows (tests/presigned.rs, temp_files.rs, links.rs): real
//! images, curl as the client, and the flows' GraphQL calls.

use super::{Server, Value, INSTANCE};
use std::path::Path;
use std::process::Command;

/// A real JPEG of `w` x `h` with a gradient (so its blurhash is not flat).
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut img = image::RgbImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels_mut() {
        *p = image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90]);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode JPEG");
    out.into_inner()
}

/// Runs curl with `args`; returns (HTTP status, body). `-sS` and a status trailer are added.
pub fn curl(args: &[&str], dir: &Path) -> (u16, String) {
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

impl Server {
    /// `createFileUpload` over GraphQL: (uploadId, uploadUrl), or the whole answer on error.
    pub fn create_file_upload(
        &self,
        token: &str,
        filename: &str,
        mime: &str,
        size: usize,
        extra: &str,
    ) -> Result<(String, String), Value> {
        let q = format!(
            r#"mutation {{ createFileUpload(filename: {filename:?}, mimeType: {mime:?}, size: {size} {extra}) {{ uploadId uploadUrl }} }}"#
        );
        let v = self.graphql(Some(token), &q);
        match v["data"]["createFileUpload"].as_object() {
            Some(o) => Ok((
                o["uploadId"].as_str().unwrap().to_string(),
                o["uploadUrl"].as_str().unwrap().to_string(),
            )),
            None => Err(v),
        }
    }

    /// `confirmFileUpload` over GraphQL, selecting Foir's File fields.
    pub fn confirm_file_upload(&self, token: &str, id: &str) -> Value {
        self.graphql(
            Some(token),
            &format!(
                r#"mutation {{ confirmFileUpload(uploadId: {id:?}) {{ id filename mimeType size url width height blurhash alt createdAt metadata directory }} }}"#
            ),
        )
    }

    /// A PUT of `body` with `content_type` to a signed URL (reqwest: sends Content-Length).
    pub fn put_bytes(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> reqwest::blocking::Response {
        self.client
            .put(url)
            .header("Content-Type", content_type)
            .body(body.to_vec())
            .send()
            .expect("PUT")
    }

    /// The first GraphQL error's `extensions.code`.
    pub fn gql_code(v: &Value) -> String {
        v["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `hypi-domain` used by these helpers.
    pub fn instance() -> &'static str {
        INSTANCE
    }
}
