//! [`Secret`]: a string that never prints itself. Its only public views are
//! [`Secret::expose`], for the code that signs, and a sha256 digest, for the
//! config hash.

use std::fmt;

use sha2::{Digest, Sha256};

/// A secret value (a signing key). `Debug` and `Display` print `<redacted>`,
/// and it deliberately implements no `Serialize`, so it cannot leak through a
/// log line, a report or a JSON dump by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// What `Debug` and `Display` print instead of the value.
    pub const REDACTED: &'static str = "<redacted>";

    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the code that needs it (HMAC signing). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:<hex>` of the value: equal secrets give equal digests, so the
    /// config hash notices a changed key without ever containing one.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("hunter2-hunter2-hunter2-hunter2-hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert!(s.digest().starts_with("sha256:"));
        assert!(!s.digest().contains("hunter2"));
        assert_eq!(s.digest().len(), "sha256:".len() + 64);
    }
}
