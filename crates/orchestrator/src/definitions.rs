//! The set of saga definitions an orchestrator runs, by name and version.
//!
//! Loaded once at start from files kept in Git; several versions of one saga
//! may be loaded side by side, because a running instance stays pinned to the
//! version it started with.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use sqsaga_core::definition::SagaDefinition;
use sqsaga_core::yaml::{format_problems, parse_definitions};

/// Why definitions could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: String },
    #[error("invalid saga definition:\n{0}")]
    Invalid(String),
    #[error("{name} v{version} is defined twice ({first} and {second})")]
    Duplicate { name: String, version: u32, first: String, second: String },
    #[error("no saga definitions found in {0}")]
    Empty(String),
    #[error("{name} v{version}: `input` is not a valid JSON Schema: {cause}")]
    InputSchema { name: String, version: u32, cause: String },
}

/// Loaded definitions: name → version → definition.
#[derive(Clone, Default)]
pub struct Definitions {
    by_name: HashMap<String, BTreeMap<u32, Arc<SagaDefinition>>>,
    origin: HashMap<(String, u32), String>,
    /// Compiled `input` schemas, by name and version.
    inputs: HashMap<(String, u32), Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for Definitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definitions").field("by_name", &self.by_name).field("origin", &self.origin).finish()
    }
}

impl Definitions {
    /// Loads every `.yaml`/`.yml` saga file given, or found in a given
    /// directory (non-recursive; `fleet.yaml` is the drift policy, not a saga).
    pub fn load(paths: &[PathBuf]) -> Result<Definitions, DefinitionError> {
        let mut defs = Definitions::default();
        let mut problems = Vec::new();
        for file in expand(paths)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| DefinitionError::Read { path: file.display().to_string(), cause: e.to_string() })?;
            match parse_definitions(&text) {
                Ok(list) => {
                    for def in list {
                        defs.insert(def, &file.display().to_string())?;
                    }
                }
                Err(p) => problems.push(format_problems(&file.display().to_string(), &p)),
            }
        }
        if !problems.is_empty() {
            return Err(DefinitionError::Invalid(problems.join("\n")));
        }
        if defs.by_name.is_empty() {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(DefinitionError::Empty(names.join(", ")));
        }
        Ok(defs)
    }

    /// Adds one definition; the same name and version twice is an error.
    pub fn insert(&mut self, def: SagaDefinition, origin: &str) -> Result<(), DefinitionError> {
        let key = (def.name.clone(), def.version);
        if let Some(first) = self.origin.get(&key) {
            return Err(DefinitionError::Duplicate {
                name: def.name,
                version: def.version,
                first: first.clone(),
                second: origin.to_string(),
            });
        }
        if let Some(schema) = &def.input_schema {
            let validator = jsonschema::validator_for(schema).map_err(|e| DefinitionError::InputSchema {
                name: def.name.clone(),
                version: def.version,
                cause: e.to_string(),
            })?;
            self.inputs.insert(key.clone(), Arc::new(validator));
        }
        self.origin.insert(key, origin.to_string());
        self.by_name.entry(def.name.clone()).or_default().insert(def.version, Arc::new(def));
        Ok(())
    }

    /// Checks a start request's input against the definition's `input`
    /// schema; the error lists what is wrong (at most five problems, each
    /// with its JSON pointer).
    pub fn check_input(&self, def: &SagaDefinition, input: &serde_json::Value) -> Result<(), String> {
        let Some(validator) = self.inputs.get(&(def.name.clone(), def.version)) else { return Ok(()) };
        let problems: Vec<String> = validator
            .iter_errors(input)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(format!("input does not match {} v{}'s input schema: {}", def.name, def.version, problems.join("; ")))
    }

    /// Exactly `name` at `version`.
    pub fn get(&self, name: &str, version: u32) -> Option<Arc<SagaDefinition>> {
        self.by_name.get(name)?.get(&version).cloned()
    }

    /// The newest version of `name`.
    pub fn latest(&self, name: &str) -> Option<Arc<SagaDefinition>> {
        self.by_name.get(name)?.values().next_back().cloned()
    }

    /// Every loaded definition, every version.
    pub fn all(&self) -> Vec<Arc<SagaDefinition>> {
        let mut out: Vec<_> = self.by_name.values().flat_map(|v| v.values().cloned()).collect();
        out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        out
    }

    /// Every service named by any loaded definition.
    pub fn services(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.all().iter().flat_map(|d| d.services().into_iter().map(str::to_string).collect::<Vec<_>>()).collect();
        out.sort();
        out.dedup();
        out
    }
}

fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DefinitionError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| DefinitionError::Read { path: path.display().to_string(), cause: e.to_string() })?;
            let mut found: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_saga_file(p)).collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Which files of a definitions directory are loaded (lives in the core, so
/// `sqsaga lint-deploy` applies the same rule without depending on this crate).
pub use sqsaga_core::definition::is_saga_file;

#[cfg(test)]
mod input_tests {
    use serde_json::json;

    use super::*;

    fn with_input(schema: serde_json::Value) -> Result<(Definitions, Arc<SagaDefinition>), DefinitionError> {
        let text =
            "name: s\nversion: 1\ndeadline: 1m\nsteps:\n  - { name: a, service: x, action: a.do, contract: x/v1 }\n";
        let mut def =
            sqsaga_core::yaml::parse_definition(text).map_err(|p| DefinitionError::Invalid(format!("{p:?}")))?;
        def.input_schema = Some(schema);
        let mut defs = Definitions::default();
        defs.insert(def, "test")?;
        let def = defs.latest("s").ok_or_else(|| DefinitionError::Empty("s".into()))?;
        Ok((defs, def))
    }

    #[test]
    fn inputs_are_checked_against_the_schema_naming_the_field() {
        let schema =
            json!({"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer", "minimum": 1}}});
        let (defs, def) = with_input(schema).unwrap();
        assert_eq!(defs.check_input(&def, &json!({"qty": 2})), Ok(()));
        let missing = defs.check_input(&def, &json!({})).unwrap_err();
        assert!(missing.contains("\"qty\" is a required property"), "{missing}");
        let low = defs.check_input(&def, &json!({"qty": 0})).unwrap_err();
        assert!(low.starts_with("input does not match s v1's input schema: /qty:"), "{low}");
    }

    #[test]
    fn an_invalid_schema_is_refused_when_loading() {
        let err = with_input(json!({"type": "no such type"})).unwrap_err();
        assert!(matches!(err, DefinitionError::InputSchema { .. }), "{err}");
    }
}
