//! Resolving a process's settings from its flags, the environment and the
//! config file (`sqsaga_config` does the work; this is the one place the
//! runtime and the binary call it), and the signing policy they imply.

use std::path::PathBuf;
use std::sync::Arc;

use sqsaga_config::{Settings, Sources};
use sqsaga_protocol::{Signer, Signing};

use crate::RuntimeError;

/// What the command line sets on top of the environment and the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`: the JSON config file (else `SQSAGA_CONFIG`).
    pub config: Option<PathBuf>,
    /// `--data-dir`: the embedded backend's directory.
    pub data_dir: Option<PathBuf>,
    /// `--service`: the worker's participant service.
    pub service: Option<String>,
    /// `--participant-db`: the worker's own database (`sqlite:<path>`, `postgres://...`).
    pub participant_db: Option<String>,
    /// The backend a one-shot command works on (`embedded`, `aws`).
    pub backend: Option<String>,
}

/// The effective settings; every problem is reported at once, naming the
/// variable, key or flag.
pub fn resolve(overrides: &Overrides) -> Result<Settings, RuntimeError> {
    let mut env = sqsaga_config::env_map();
    if let Some(backend) = &overrides.backend {
        env.insert("SQSAGA_BACKEND".to_string(), backend.clone());
    }
    let mut sources = Sources::new(&env);
    if let Some(path) = &overrides.config {
        sources = sources.with_config_path(path.clone());
    }
    if let Some(dir) = &overrides.data_dir {
        sources = sources.with_flag("data_dir", dir.display().to_string());
    }
    if let Some(service) = &overrides.service {
        sources = sources.with_flag("service", service.clone());
    }
    if let Some(db) = &overrides.participant_db {
        sources = sources.with_flag("participant_db", db.clone());
    }
    Ok(Settings::resolve(&sources)?)
}

/// The signing policy of `settings`; `None` when no key is configured
/// (the configuration check refuses `require_signature` without a key).
pub fn signing(settings: &Settings) -> Option<Arc<Signing>> {
    let key = settings.signing_key.as_ref()?;
    let previous = settings.signing_key_previous.as_ref();
    Some(Arc::new(Signing {
        signer: Signer::new(key.expose().as_bytes(), previous.map(|p| p.expose().as_bytes())),
        max_age: settings.signature_max_age,
        require: settings.require_signature,
    }))
}
