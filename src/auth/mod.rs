//! Who is calling: JWT verification into a [`Caller`], and AccessRight evaluation.

pub mod access;
pub mod jwt;
pub mod sign;

use crate::error::{Error, Result};
use crate::types::AccountId;
pub use jwt::Keys;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account: AccountId,
    /// The instance domain the request acts in.
    pub instance: String,
    /// Admin of that instance.
    pub admin: bool,
}

/// Whoever sent a request: a verified principal, or nobody (no token at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User(Principal),
}

impl Caller {
    /// The principal, or 401 for an anonymous caller.
    pub fn require(&self) -> Result<&Principal> {
        match self {
            Caller::User(p) => Ok(p),
            Caller::Anonymous => Err(Error::Unauthenticated("a token is required".into())),
        }
    }
}

/// Turns the `Authorization` and `hypi-domain` header values into a [`Caller`].
///
/// `Bearer <jwt>` and the bare token are both accepted (Hypi's examples send it bare). A token
/// that is present but invalid is always 401: it never silently degrades to anonymous. The
/// instance is `hypi-domain`, else the configured default, else the token's; it must match the
/// token's.
pub fn authenticate(
    keys: &Keys,
    authorization: Option<&str>,
    domain: Option<&str>,
    default_instance: Option<&str>,
) -> Result<Caller> {
    let Some(raw) = authorization.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Caller::Anonymous);
    };
    let token = match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => {
            return Err(Error::Unauthenticated(
                "unsupported authorization scheme".into(),
            ))
        }
        None => raw,
    };
    let claims = keys.verify(token)?;
    let instance = domain
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .or(default_instance)
        .unwrap_or(&claims.instance);
    if !instance.eq_ignore_ascii_case(&claims.instance) {
        return Err(Error::Unauthenticated(format!(
            "token is for instance {}, not {}",
            claims.instance, instance
        )));
    }
    Ok(Caller::User(Principal {
        account: AccountId(claims.sub),
        instance: claims.instance.to_ascii_lowercase(),
        admin: claims.admin,
    }))
}
