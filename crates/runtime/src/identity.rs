//! Who this process is: the build (version and git commit, from build.rs),
//! the drift guard's fingerprint of the running executable, configuration
//! and contracts, and the host name heartbeats report.

use serde_json::Value;
use sqsaga_config::Settings;
use sqsaga_drift::{Fingerprint, FingerprintParts};

/// Binary version, for build info and fingerprints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit of the build (see build.rs).
pub const GIT_SHA: &str = env!("BUILD_GIT_SHA");

/// The process's fingerprint; `contracts` are those it implements.
pub fn fingerprint(settings: &Settings, contracts: Vec<String>) -> Fingerprint {
    let executable_sha256 = sqsaga_drift::executable_sha256().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "Cannot hash the running executable; the fingerprint will say so.");
        format!("unreadable: {e}")
    });
    Fingerprint::new(FingerprintParts {
        version: VERSION.to_string(),
        git_sha: GIT_SHA.to_string(),
        executable_sha256,
        config_hash: settings.config_hash(),
        contracts,
        config: settings.effective(),
    })
}

/// The machine's name for heartbeats (`sqsaga_config::hostname` over the
/// process environment).
pub fn hostname() -> String {
    sqsaga_config::hostname(&sqsaga_config::env_map())
}

/// What a worker's heartbeats carry besides its fingerprint id: the host
/// and the fingerprint's parts, so a verdict can say what differs.
pub fn heartbeat_fields(fp: &Fingerprint) -> (String, Value) {
    (hostname(), serde_json::to_value(&fp.parts).unwrap_or(Value::Null))
}

/// A fingerprint id shortened for logs and tables.
pub fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}
