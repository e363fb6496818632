//! The config file parser of `crates/config` (`config.json`, the Chef path)
//! through the whole resolution, on arbitrary file text
//! ([`Settings::resolve_with_file_text`]: the same resolution as
//! [`Settings::resolve`], minus reading the file).
//!
//! Properties: no panic; every problem names where and what; a secret from
//! the file never appears in a problem nor in `config check`'s report; and
//! the effective configuration (what `config check` prints and the drift
//! guard hashes), written back as a config file, resolves to the same
//! effective configuration and hash.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sqsaga_config::{SETTINGS, Settings, Sources};

const PATH: &str = "/etc/sqsaga/config.json";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // HOSTNAME set: the default instance id does not read the machine's name.
    let env = BTreeMap::from([("HOSTNAME".to_string(), "fuzz-host".to_string())]);
    let sources = Sources::new(&env);
    let file: Option<Map<String, Value>> = serde_json::from_str(text).ok();
    let secrets: Vec<String> = SETTINGS
        .iter()
        .filter(|s| s.secret)
        .filter_map(|s| file.as_ref()?.get(s.key)?.as_str().map(str::to_string))
        .filter(|v| v.chars().count() >= 16)
        .collect();
    let leaks = |shown: &str| secrets.iter().find(|s| shown.contains(s.as_str())).cloned();

    match Settings::resolve_with_file_text(&sources, Path::new(PATH), text) {
        Ok(settings) => {
            let report = settings.redacted_report();
            assert_eq!(leaks(&report), None, "a secret in the report:\n{report}");
            let Some(file) = file else { panic!("accepted a config file that is not a JSON object: {text}") };
            // The effective configuration as a config file; secrets (shown as
            // digests) come from the original file.
            let effective = settings.effective();
            let mut written = Map::new();
            for spec in SETTINGS.iter().filter(|s| !s.per_instance) {
                let value = if spec.secret { file.get(spec.key).cloned() } else { effective.get(spec.key).cloned() };
                if let Some(v) = value.filter(|v| !v.is_null()) {
                    written.insert(spec.key.to_string(), v);
                }
            }
            let written = Value::Object(written).to_string();
            match Settings::resolve_with_file_text(&sources, Path::new(PATH), &written) {
                Ok(again) => {
                    assert_eq!(again.effective(), settings.effective(), "written back as {written}");
                    assert_eq!(again.config_hash(), settings.config_hash());
                }
                Err(e) => panic!("the effective configuration {written} is refused: {e}"),
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refusal without a problem");
            for p in &errors.0 {
                assert!(!p.location.is_empty() && p.message.len() > 5, "{p:?}");
            }
            let shown = errors.to_string();
            assert_eq!(leaks(&shown), None, "a secret in the problems:\n{shown}");
        }
    }
});
