//! Signed URLs: capabilities (an upload session's PUT, a temp file's download, a download link)
//! carried in a URL as `?expires=<unix secs>&sig=<hex HMAC-SHA256>`. The key is its own (never
//! the JWT secret), kept in `<data_dir>/url.key` unless configured; retired keys listed in
//! `auth.previous_url_signing_keys` still verify, so a key can be rotated without breaking
//! URLs in flight. Verification is constant-time (`hmac`'s `verify_slice`).

use super::jwt::load_or_create_secret;
use crate::config::AuthConfig;
use crate::error::{Error, Result, SessionFault, StartError};
use hmac::{Hmac, Mac};
use std::path::Path;

type HmacSha256 = Hmac<sha2::Sha256>;

/// Name of the generated URL key inside the data dir.
pub const URL_KEY_FILE: &str = "url.key";

/// Shortest key accepted from configuration.
const MIN_KEY_LEN: usize = 32;

/// What a signature is good for: the same id signed for one purpose never passes as another
/// (a temp file's download URL cannot upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// PUT the bytes of a presigned upload session.
    Put,
    /// PUT the bytes of a temp file.
    TempPut,
    /// GET the bytes of a temp file.
    TempGet,
    /// GET the file of a download link.
    Link,
    /// POST the bytes of a Hygraph asset (the signed id is the form's base64 policy).
    AssetPost,
    /// PUT one part of a multipart temp file (the signed id names the session and the part
    /// number: a part's URL uploads that part only).
    MultipartPart,
    /// POST the complete request of a multipart temp file.
    MultipartComplete,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Put => "put",
            Purpose::TempPut => "temp-put",
            Purpose::TempGet => "temp-get",
            Purpose::Link => "link",
            Purpose::AssetPost => "asset-post",
            Purpose::MultipartPart => "multipart-part",
            Purpose::MultipartComplete => "multipart-complete",
        }
    }
}

/// Signs and checks URL capabilities.
pub struct UrlSigner {
    current: Vec<u8>,
    previous: Vec<Vec<u8>>,
}

impl UrlSigner {
    /// The configured key, else the data dir's (generated on first start), plus retired keys.
    pub fn load(cfg: &AuthConfig, data_dir: &Path) -> Result<Self, StartError> {
        let short = |what: &str| {
            StartError::Config(format!(
                "{what} must be at least {MIN_KEY_LEN} characters long"
            ))
        };
        let current = match &cfg.url_signing_key {
            Some(k) if k.len() < MIN_KEY_LEN => return Err(short("auth.url_signing_key")),
            Some(k) => k.as_bytes().to_vec(),
            None => load_or_create_secret(data_dir, URL_KEY_FILE).map_err(|e| StartError::Key {
                what: "cannot load the URL signing key in",
                path: data_dir.to_path_buf(),
                source: e.into(),
            })?,
        };
        let mut previous = Vec::new();
        for k in &cfg.previous_url_signing_keys {
            if k.len() < MIN_KEY_LEN {
                return Err(short("each of auth.previous_url_signing_keys"));
            }
            previous.push(k.as_bytes().to_vec());
        }
        Ok(Self { current, previous })
    }

    /// A signer with just this key (tests).
    pub fn with_key(key: &[u8]) -> Self {
        Self {
            current: key.to_vec(),
            previous: Vec::new(),
        }
    }

    fn mac(
        key: &[u8],
        purpose: Purpose,
        instance: &str,
        id: &str,
        expires: u64,
    ) -> Result<HmacSha256> {
        // HMAC takes keys of any length: this does not fail.
        let mut mac = HmacSha256::new_from_slice(key)
            .map_err(|e| Error::Internal(format!("URL signing key: {e}")))?;
        // Fields are joined with a byte none of them can hold.
        for part in [purpose.label(), instance, id, &expires.to_string()] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        Ok(mac)
    }

    /// The `expires=..&sig=..` query for this capability.
    pub fn query(
        &self,
        purpose: Purpose,
        instance: &str,
        id: &str,
        expires: u64,
    ) -> Result<String> {
        let sig = Self::mac(&self.current, purpose, instance, id, expires)?
            .finalize()
            .into_bytes();
        Ok(format!("expires={expires}&sig={}", hex::encode(sig)))
    }

    /// Checks a signature (any current or retired key), then the expiry against `now_secs`.
    /// A bad signature is refused before the expiry is looked at, so a forged `expires` learns
    /// nothing.
    pub fn verify(
        &self,
        purpose: Purpose,
        instance: &str,
        id: &str,
        expires: u64,
        sig_hex: &str,
        now_secs: u64,
    ) -> Result<()> {
        let bad = || {
            Error::Session(
                SessionFault::BadSignature,
                "the URL's signature is not valid".into(),
            )
        };
        let sig = hex::decode(sig_hex).map_err(|_| bad())?;
        let mut ok = false;
        for k in std::iter::once(&self.current).chain(&self.previous) {
            ok |= Self::mac(k, purpose, instance, id, expires)?
                .verify_slice(&sig)
                .is_ok();
        }
        if !ok {
            return Err(bad());
        }
        if now_secs >= expires {
            return Err(Error::Session(
                SessionFault::Expired,
                "this URL has expired".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifies_and_rotates() {
        let old = UrlSigner::with_key(b"old-key-old-key-old-key-old-key-0");
        let q = old.query(Purpose::Put, "i", "s", 100).unwrap();
        let sig = q.split("sig=").nth(1).unwrap();
        assert!(old.verify(Purpose::Put, "i", "s", 100, sig, 99).is_ok());
        // Expired, other purpose, other id, other expiry: refused.
        assert_eq!(
            old.verify(Purpose::Put, "i", "s", 100, sig, 100)
                .unwrap_err()
                .code(),
            "EXPIRED"
        );
        for (p, id, exp) in [
            (Purpose::TempGet, "s", 100),
            (Purpose::Put, "t", 100),
            (Purpose::Put, "s", 101),
        ] {
            assert_eq!(
                old.verify(p, "i", id, exp, sig, 0).unwrap_err().code(),
                "INVALID_SIGNATURE"
            );
        }
        // Rotated: the new key signs, the old one still verifies.
        let new = UrlSigner {
            current: b"new-key-new-key-new-key-new-key-1".to_vec(),
            previous: vec![b"old-key-old-key-old-key-old-key-0".to_vec()],
        };
        assert!(new.verify(Purpose::Put, "i", "s", 100, sig, 0).is_ok());
        let fresh = UrlSigner::with_key(b"other-key-other-key-other-key-xx");
        assert!(fresh.verify(Purpose::Put, "i", "s", 100, sig, 0).is_err());
        assert!(fresh.verify(Purpose::Put, "i", "s", 100, "zz", 0).is_err());
    }
}
