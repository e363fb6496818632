//! Saga definitions: the typed form of the YAML documents kept in Git.
//!
//! A definition is immutable once loaded; a saga instance is pinned to the
//! `(name, version)` it started with. Parsing and positional error reporting
//! live in [`crate::yaml`]; this module owns the types and the rules that do
//! not depend on where the text came from.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One saga definition, e.g. `create_order` version 3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaDefinition {
    /// Stable name that start requests refer to.
    pub name: String,
    /// Bumped on every change; running instances stay on the version they started with.
    pub version: u32,
    /// Free text for humans and for the graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Wall-clock budget of the whole saga; past it, the saga compensates.
    #[serde(with = "millis")]
    pub deadline: Duration,
    /// Ordered steps; compensation runs them backwards.
    pub steps: Vec<StepDefinition>,
    /// JSON Schema every start request's input must satisfy (YAML key
    /// `input`); `None` accepts any input. Checked by the orchestrator (a
    /// start whose input fails goes to the DLQ with the reason) and by
    /// `sqsaga start` before anything is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
}

/// One local transaction in one participant service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDefinition {
    /// Unique within the saga; appears in logs, command ids and the graph.
    pub name: String,
    /// The participant service (and so the queue) that runs the step.
    pub service: String,
    /// Command the worker executes to perform the step (`inventory.reserve`).
    pub action: String,
    /// Command that undoes the step; `None` for a step that cannot be undone,
    /// which must therefore come after every compensable step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<String>,
    /// Run time of one attempt, counted from the moment a worker may start
    /// it at the latest (see `queue_timeout`), not from dispatch: time a
    /// command waits in a backlog is not run time.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// How long one attempt's command may wait in the worker's queue before
    /// the worker refuses to start it (no effect; the saga compensates the
    /// earlier steps). `None`: queue wait is bounded by the saga deadline only.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "millis_opt")]
    pub queue_timeout: Option<Duration>,
    /// Retries of the action on transient errors.
    pub retry: RetryPolicy,
    /// Retries of the compensation; exhausted means `needs_operator`.
    pub compensation_retry: RetryPolicy,
    /// Handler contract a worker must implement to run this step (`inventory/v1`).
    pub contract: String,
}

/// Exponential backoff with a cap and jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts including the first one (1 = no retry).
    pub max_attempts: u32,
    #[serde(with = "millis")]
    pub initial_backoff: Duration,
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    /// Growth factor per attempt, >= 1.
    pub multiplier: f64,
    /// Fraction of the backoff that is randomised, in [0, 1].
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl SagaDefinition {
    /// The definition in the shape of its YAML file (camelCase keys,
    /// durations as `30s`, every step's settings spelled out, no
    /// `defaults`): what the admin API shows as YAML, and what
    /// `yaml::parse_definition` reads back to an equal definition.
    pub fn document(&self) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        let d = |x: Duration| Value::String(crate::duration::format_duration(x));
        let retry = |r: &RetryPolicy| {
            json!({
                "maxAttempts": r.max_attempts,
                "initialBackoff": d(r.initial_backoff),
                "maxBackoff": d(r.max_backoff),
                "multiplier": r.multiplier,
                "jitter": r.jitter,
            })
        };
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let mut m = Map::new();
                m.insert("name".into(), s.name.clone().into());
                m.insert("service".into(), s.service.clone().into());
                m.insert("action".into(), s.action.clone().into());
                if let Some(c) = &s.compensation {
                    m.insert("compensation".into(), c.clone().into());
                }
                m.insert("contract".into(), s.contract.clone().into());
                m.insert("timeout".into(), d(s.timeout));
                if let Some(q) = s.queue_timeout {
                    m.insert("queueTimeout".into(), d(q));
                }
                m.insert("retry".into(), retry(&s.retry));
                m.insert("compensationRetry".into(), retry(&s.compensation_retry));
                Value::Object(m)
            })
            .collect();
        let mut doc = Map::new();
        doc.insert("name".into(), self.name.clone().into());
        doc.insert("version".into(), self.version.into());
        if let Some(text) = &self.description {
            doc.insert("description".into(), text.clone().into());
        }
        doc.insert("deadline".into(), d(self.deadline));
        if let Some(schema) = &self.input_schema {
            doc.insert("input".into(), schema.clone());
        }
        doc.insert("steps".into(), Value::Array(steps));
        Value::Object(doc)
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry).
    ///
    /// Jitter is derived from `seed` (saga id, step, attempt) instead of a
    /// random number generator, so the state machine stays a pure function
    /// and a replayed event computes the same schedule, while different sagas
    /// still spread out.
    pub fn backoff(&self, next_attempt: u32, seed: &str) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(64) as i32;
        let base_ms = self.initial_backoff.as_millis() as f64 * self.multiplier.max(1.0).powi(exponent);
        let capped = base_ms.min(self.max_backoff.as_millis() as f64);
        let jitter = self.jitter.clamp(0.0, 1.0);
        // Uniform in [1 - jitter, 1]: jitter only ever shortens the wait, so the cap holds.
        let unit = unit_interval(seed, next_attempt);
        let ms = capped * (1.0 - jitter * unit);
        Duration::from_millis(ms.max(0.0).round() as u64)
    }
}

/// A deterministic number in [0, 1) from a seed string and an attempt.
fn unit_interval(seed: &str, attempt: u32) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.as_bytes());
    hasher.update(attempt.to_le_bytes());
    let digest = hasher.finalize();
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(eight) >> 11) as f64 / (1u64 << 53) as f64
}

impl SagaDefinition {
    /// The step with this index, if any.
    pub fn step(&self, index: usize) -> Option<&StepDefinition> {
        self.steps.get(index)
    }

    /// Every service named by a step, in order of first appearance.
    pub fn services(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for step in &self.steps {
            if !out.contains(&step.service.as_str()) {
                out.push(&step.service);
            }
        }
        out
    }

    /// The longest single-attempt timeout of any step; deployment checks
    /// compare termination grace periods against it.
    pub fn longest_step_timeout(&self) -> Duration {
        self.steps.iter().map(|s| s.timeout).max().unwrap_or_default()
    }
}

/// Whether `name` can name a participant service: it becomes a queue name,
/// so at most 64 lowercase ASCII letters, digits and `-`, starting with a
/// letter or a digit. Saga definitions and the drift guard's `fleet.yaml`
/// hold service names to the same rule.
pub fn is_service_name(name: &str) -> bool {
    name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Serde helper for optional durations, as integer milliseconds or absent.
pub mod millis_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Serde helper: durations travel as integer milliseconds in JSON state.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Whether a file found in a definitions directory is loaded as a saga
/// definition (`*.yaml`/`*.yml`, except `fleet.yaml`); the orchestrator's
/// loader and `sqsaga lint-deploy` (on a mounted ConfigMap's keys) share it.
pub fn is_saga_file(path: &Path) -> bool {
    let yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    yaml && stem != "fleet"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    #[test]
    fn backoff_grows_exponentially_and_caps() {
        let p = policy();
        let got: Vec<u64> = (2..=7).map(|a| p.backoff(a, "s").as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_bounds_and_is_deterministic() {
        let p = RetryPolicy { jitter: 0.5, ..policy() };
        for attempt in 2..20 {
            let a = p.backoff(attempt, "saga-1/step");
            let b = p.backoff(attempt, "saga-1/step");
            assert_eq!(a, b);
            let plain = policy().backoff(attempt, "x");
            assert!(a <= plain && a >= plain / 2, "attempt {attempt}: {a:?} vs {plain:?}");
        }
        // Different seeds spread out.
        let spread: std::collections::BTreeSet<_> = (0..20).map(|i| p.backoff(3, &format!("saga-{i}"))).collect();
        assert!(spread.len() > 10);
    }
}
