//! A process's fingerprint: its build (version, git sha, sha256 of the running
//! executable), the hash of its effective configuration (secrets hashed,
//! per-instance values excluded) and the handler contracts it implements.
//! The fingerprint id is the hash of all parts; the parts are kept so a
//! verdict can say *what* differs.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What went into a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintParts {
    /// Crate version of the binary.
    pub version: String,
    /// Git commit the binary was built from (`unknown` outside a checkout).
    pub git_sha: String,
    /// sha256 of the running executable: catches a replaced file that kept its version label.
    pub executable_sha256: String,
    /// sha256 of the canonical effective configuration.
    pub config_hash: String,
    /// Handler contracts implemented (`inventory/v1`), sorted.
    pub contracts: Vec<String>,
    /// The effective configuration itself (secrets already hashed), so a
    /// verdict can name the keys that differ.
    pub config: BTreeMap<String, Value>,
}

/// A fingerprint: its id and its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// sha256 hex over the canonical parts (without the config map, which
    /// `config_hash` already covers).
    pub id: String,
    pub parts: FingerprintParts,
}

impl Fingerprint {
    pub fn new(mut parts: FingerprintParts) -> Fingerprint {
        parts.contracts.sort();
        parts.contracts.dedup();
        let mut h = Sha256::new();
        for field in [&parts.version, &parts.git_sha, &parts.executable_sha256, &parts.config_hash] {
            h.update(field.as_bytes());
            h.update([0u8]);
        }
        for c in &parts.contracts {
            h.update(c.as_bytes());
            h.update([1u8]);
        }
        Fingerprint { id: hex::encode(h.finalize()), parts }
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// sha256 of the running executable, read from `/proc/self/exe` (or the
/// platform's equivalent) — the file the process was started from, even if
/// the path on disk has since been replaced.
pub fn executable_sha256() -> std::io::Result<String> {
    let path =
        if cfg!(target_os = "linux") { std::path::PathBuf::from("/proc/self/exe") } else { std::env::current_exe()? };
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> FingerprintParts {
        FingerprintParts {
            version: "0.1.0".into(),
            git_sha: "abc".into(),
            executable_sha256: "e".repeat(64),
            config_hash: "c".repeat(64),
            contracts: vec!["payment/v1".into(), "inventory/v1".into()],
            config: BTreeMap::new(),
        }
    }

    #[test]
    fn every_part_changes_the_id_and_contract_order_does_not() {
        let base = Fingerprint::new(parts());
        let mut reordered = parts();
        reordered.contracts.reverse();
        assert_eq!(Fingerprint::new(reordered).id, base.id);
        let variants = [
            FingerprintParts { version: "0.2.0".into(), ..parts() },
            FingerprintParts { git_sha: "abd".into(), ..parts() },
            FingerprintParts { executable_sha256: "f".repeat(64), ..parts() },
            FingerprintParts { config_hash: "d".repeat(64), ..parts() },
            FingerprintParts { contracts: vec!["inventory/v1".into()], ..parts() },
        ];
        for v in variants {
            assert_ne!(Fingerprint::new(v).id, base.id);
        }
    }

    #[test]
    fn executable_hash_reads_the_running_binary() {
        let a = executable_sha256().unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(a, executable_sha256().unwrap());
    }
}
