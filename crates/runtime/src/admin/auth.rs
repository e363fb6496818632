//! Who is calling the admin API: bearer tokens to roles.
//!
//! Two tokens, from the settings or a secret file: `admin` (everything) and
//! `read` (every GET). With any token configured, a request without a valid
//! one is refused with 401, a read token on a mutation with 403. With none
//! (allowed on loopback only: `admin_addr` refuses a non-loopback address
//! without an admin token), every caller is admin and named `local`.
//! Tokens are compared in constant time (`subtle`), so response timing does
//! not leak how much of a guess was right. No cookies: a browser never
//! attaches the token by itself, so there is no CSRF surface.

use std::path::Path;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sqsaga_config::{Secret, Settings};
use subtle::ConstantTimeEq;

use crate::RuntimeError;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// GETs only.
    Read,
    /// Reads and mutations.
    Admin,
}

/// An authenticated caller: its role and the name audit lines give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// `admin`, `read`, or `local` when no token is configured.
    pub name: &'static str,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or not one of ours: 401.
    Unauthenticated,
    /// A valid token whose role does not allow this: 403.
    Forbidden,
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    admin: Option<Secret>,
    read: Option<Secret>,
}

impl Tokens {
    /// Tokens given directly (tests).
    pub fn new(admin: Option<&str>, read: Option<&str>) -> Tokens {
        Tokens { admin: admin.map(Secret::new), read: read.map(Secret::new) }
    }

    /// The tokens of the settings, reading the secret files now; an
    /// unreadable or empty file is a configuration error naming its setting.
    pub fn from_settings(settings: &Settings) -> Result<Tokens, RuntimeError> {
        let read = |value: &Option<Secret>, file: &Option<std::path::PathBuf>, key: &str| match (value, file) {
            (Some(v), _) => Ok(Some(v.clone())),
            (None, Some(path)) => read_token_file(path, key).map(Some),
            (None, None) => Ok(None),
        };
        Ok(Tokens {
            admin: read(&settings.admin_token, &settings.admin_token_file, "admin_token_file")?,
            read: read(&settings.admin_read_token, &settings.admin_read_token_file, "admin_read_token_file")?,
        })
    }

    /// Whether an admin token is configured (a non-loopback listener needs one).
    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// Who sent `headers`, and whether `role` is allowed to them.
    pub fn check(&self, headers: &HeaderMap, needs: Role) -> Result<Caller, Refusal> {
        if self.admin.is_none() && self.read.is_none() {
            return Ok(Caller { role: Role::Admin, name: "local" });
        }
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(Refusal::Unauthenticated)?;
        // Both compared, whatever the first gave: the time taken does not say which matched.
        let is_admin = matches(self.admin.as_ref(), presented);
        let is_read = matches(self.read.as_ref(), presented);
        let caller = if is_admin {
            Caller { role: Role::Admin, name: "admin" }
        } else if is_read {
            Caller { role: Role::Read, name: "read" }
        } else {
            return Err(Refusal::Unauthenticated);
        };
        if needs == Role::Admin && caller.role != Role::Admin {
            return Err(Refusal::Forbidden);
        }
        Ok(caller)
    }
}

fn matches(token: Option<&Secret>, presented: &str) -> bool {
    token.is_some_and(|t| bool::from(t.expose().as_bytes().ct_eq(presented.as_bytes())))
}

fn read_token_file(path: &Path, key: &str) -> Result<Secret, RuntimeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RuntimeError::config(format!("{key}: cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(RuntimeError::config(format!(
            "{key}: {} holds {} bytes; a token needs at least 16",
            path.display(),
            token.len()
        )));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        h
    }

    #[test]
    fn roles_by_token() {
        let tokens = Tokens::new(Some("admin-token-0123456789"), Some("read-token-0123456789"));
        let none = HeaderMap::new();
        // (headers, needed role, expected)
        let cases: Vec<(HeaderMap, Role, Result<&str, Refusal>)> = vec![
            (none.clone(), Role::Read, Err(Refusal::Unauthenticated)),
            (bearer("wrong-token-0123456789"), Role::Read, Err(Refusal::Unauthenticated)),
            (bearer("admin-token-012345678"), Role::Read, Err(Refusal::Unauthenticated)),
            (bearer("read-token-0123456789"), Role::Read, Ok("read")),
            (bearer("read-token-0123456789"), Role::Admin, Err(Refusal::Forbidden)),
            (bearer("admin-token-0123456789"), Role::Admin, Ok("admin")),
            (bearer("admin-token-0123456789"), Role::Read, Ok("admin")),
        ];
        for (headers, needs, expected) in cases {
            assert_eq!(tokens.check(&headers, needs).map(|c| c.name), expected, "{headers:?} {needs:?}");
        }
        assert_eq!(Tokens::default().check(&none, Role::Admin).map(|c| c.name), Ok("local"));
        let read_only = Tokens::new(None, Some("read-token-0123456789"));
        assert_eq!(read_only.check(&bearer("read-token-0123456789"), Role::Admin), Err(Refusal::Forbidden));
    }

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("admin");
        std::fs::write(&good, "  file-token-0123456789\n").unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        assert_eq!(read_token_file(&good, "admin_token_file").unwrap().expose(), "file-token-0123456789");
        let e = read_token_file(&short, "admin_token_file").err().unwrap().to_string();
        assert!(e.contains("admin_token_file") && e.contains("at least 16"), "{e}");
        let e = read_token_file(&dir.path().join("missing"), "admin_read_token_file").err().unwrap().to_string();
        assert!(e.contains("admin_read_token_file"), "{e}");
    }
}
