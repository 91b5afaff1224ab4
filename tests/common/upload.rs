//! Uploads through a client library: one form builder, one request, one way to read the answer.

use super::server::{Server, INSTANCE};
use super::Value;
use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::Client;

/// A multipart form with one file part per `(file name, bytes)`, fields named `0`, `1`, ...
/// as in Hypi's curl examples.
pub fn upload_form(files: &[(&str, &[u8])]) -> Form {
    files
        .iter()
        .enumerate()
        .fold(Form::new(), |form, (i, (name, bytes))| {
            form.part(
                i.to_string(),
                Part::bytes(bytes.to_vec()).file_name(name.to_string()),
            )
        })
}

/// The first File record of an upload answer (keyed by file name).
pub fn first_record(body: &Value) -> Value {
    body.as_object()
        .and_then(|o| o.values().next())
        .unwrap_or_else(|| panic!("no File record in {body}"))
        .clone()
}

impl Server {
    /// Uploads `(name, bytes)` parts to `dir` (e.g. `/upload/`), returns (status, body).
    pub fn upload(&self, token: &str, dir: &str, files: &[(&str, &[u8])]) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(dir))
            .header("Accept", "application/json")
            .header("Authorization", token)
            .header("hypi-domain", INSTANCE)
            .multipart(upload_form(files))
            .send()
            .expect("upload request");
        let status = res.status().as_u16();
        (status, res.json().unwrap_or(Value::Null))
    }

    /// Uploads one file and returns its File record.
    pub fn upload_one(&self, token: &str, name: &str, bytes: &[u8]) -> Value {
        let (status, body) = self.upload(token, "/upload/", &[(name, bytes)]);
        assert_eq!(status, 200, "{body}");
        first_record(&body)
    }

    /// One upload of one file to `dir` on the client `c` (one per thread in races): the File
    /// record, or the failure (transport error or status and body) as text.
    pub fn try_upload(
        &self,
        c: &Client,
        token: &str,
        dir: &str,
        name: &str,
        data: &[u8],
    ) -> Result<Value, String> {
        let r = c
            .post(self.url(dir))
            .header("Authorization", token)
            .header("hypi-domain", INSTANCE)
            .multipart(upload_form(&[(name, data)]))
            .send()
            .map_err(|e| format!("upload {name}: {e}"))?;
        let status = r.status().as_u16();
        let v: Value = r.json().unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!("upload {name}: {status} {v}"));
        }
        Ok(first_record(&v))
    }
}
