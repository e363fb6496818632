//! The fleet policy, `fleet.yaml`: what each service's fleet is expected to
//! look like, kept in Git next to the saga definitions.
//!
//! ```yaml
//! defaults:                 # for every service not listed below
//!   mode: observe           # observe | enforce
//!   rolloutWindow: 10m      # how long two fingerprints may coexist
//! services:
//!   inventory:
//!     mode: enforce
//!     rolloutWindow: 5m
//!     expect:               # optional: what every instance must be
//!       version: 0.1.0
//!       contracts: [inventory/v1]
//! ```
//!
//! Parsing reports every problem at its `line:col` (the same [`Problem`] as
//! saga definitions), so a typo in Git fails the orchestrator's start with
//! the place to fix. Reads text, never files.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqsaga_core::definition::is_service_name;
use sqsaga_core::duration::{format_duration, parse_duration};
use sqsaga_core::marked::{Node, Options, Pos, Problem, Scalar, Value, parse_documents, suggest};

/// Rollout window when neither the service nor `defaults` sets one: ten
/// minutes, Kubernetes' default `progressDeadlineSeconds` — a rollout still
/// going after that is stuck by Kubernetes' own measure too.
pub const DEFAULT_ROLLOUT_WINDOW: Duration = Duration::from_secs(600);

/// Keys of the document.
const TOP_KEYS: &[&str] = &["defaults", "services"];
/// Keys of `defaults`.
const DEFAULTS_KEYS: &[&str] = &["mode", "rolloutWindow"];
/// Keys of one service.
const SERVICE_KEYS: &[&str] = &["mode", "rolloutWindow", "expect"];
/// Keys of `expect`.
const EXPECT_KEYS: &[&str] = &["version", "contracts"];
/// Deeper than any valid policy; keeps hostile input from building a deep tree.
const MAX_DEPTH: usize = 16;

/// What the drift guard does about a service's drifted instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Report (fleet view, metrics, logs) and let every instance work.
    Observe,
    /// Stamp commands with the conforming fingerprints: other instances
    /// release them and quarantine themselves.
    Enforce,
}

impl Mode {
    /// The lowercase name used in `fleet.yaml` and `SQSAGA_DRIFT_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Enforce => "enforce",
        }
    }

    /// Parses a name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Mode> {
        [Mode::Observe, Mode::Enforce].into_iter().find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every instance of a service must be, when declared.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Expectation {
    /// The crate version every instance must report, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Contracts every instance must implement (more are allowed: a worker
    /// that already serves `v2` next to `v1` is a migration, not drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contracts: Vec<String>,
}

/// The policy of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePolicy {
    /// Observe or enforce.
    pub mode: Mode,
    /// How long two fingerprints may coexist after the newer one appeared
    /// before the service counts as drifted rather than rolling.
    #[serde(with = "duration_text")]
    pub rollout_window: Duration,
    /// Declared expectation; `None` leaves "conforming" to the fleet itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expectation>,
}

/// The whole policy: defaults and per-service entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetPolicy {
    /// For every service without its own entry.
    pub defaults: ServicePolicy,
    /// By service name.
    pub services: BTreeMap<String, ServicePolicy>,
}

impl FleetPolicy {
    /// The policy when there is no `fleet.yaml`: every service in `mode`,
    /// with the default rollout window and no expectation.
    pub fn with_mode(mode: Mode) -> FleetPolicy {
        FleetPolicy {
            defaults: ServicePolicy { mode, rollout_window: DEFAULT_ROLLOUT_WINDOW, expect: None },
            services: BTreeMap::new(),
        }
    }

    /// Parses `fleet.yaml`. `default_mode` (the orchestrator's
    /// `SQSAGA_DRIFT_MODE`) applies where neither the service nor `defaults`
    /// names a mode. An empty document is the default policy.
    pub fn parse(text: &str, default_mode: Mode) -> Result<FleetPolicy, Vec<Problem>> {
        let (root, mut problems) = build(text);
        let mut policy = FleetPolicy::with_mode(default_mode);
        if let Some(root) = root {
            check_document(&root, &mut policy, &mut problems);
        }
        if problems.is_empty() { Ok(policy) } else { Err(problems) }
    }

    /// The policy that applies to `service`.
    pub fn for_service(&self, service: &str) -> &ServicePolicy {
        self.services.get(service).unwrap_or(&self.defaults)
    }
}

impl Default for FleetPolicy {
    fn default() -> Self {
        FleetPolicy::with_mode(Mode::Observe)
    }
}

/// `10m`-style durations in JSON, as in the YAML.
mod duration_text {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Pass 1: the text -> the shared marked tree (`sqsaga_core::marked`).

fn problem(pos: Pos, message: impl Into<String>) -> Problem {
    Problem::at(pos, message)
}

/// The document's tree (a policy is one document; an empty one is `None`),
/// and syntax problems.
fn build(text: &str) -> (Option<Node>, Vec<Problem>) {
    let (docs, mut problems) = parse_documents(text, Options { max_depth: MAX_DEPTH, what: "fleet.yaml" });
    let mut docs = docs.into_iter();
    let root = docs.next().map(|d| d.root);
    if let Some(second) = docs.next() {
        problems.push(problem(second.start, "a fleet policy is one YAML document; remove this `---`"));
    }
    (root.filter(|r| !r.is_null()), problems)
}

// ---------------------------------------------------------------------------
// Pass 2: the tree -> a policy, collecting every problem.

/// The entries of a mapping whose keys are unique strings from `allowed`
/// (any string when `allowed` is empty), with where each key is; every
/// other key is reported.
fn mapping<'a>(
    node: &'a Node,
    path: &str,
    allowed: &[&str],
    problems: &mut Vec<Problem>,
) -> Vec<(&'a str, Pos, &'a Node)> {
    let Value::Map(entries) = &node.value else {
        problems.push(problem(node.pos, format!("{path}: expected a mapping ({})", allowed.join(", "))));
        return Vec::new();
    };
    let mut out: Vec<(&str, Pos, &Node)> = Vec::new();
    for (k, v) in entries {
        let Value::Scalar(Scalar { text, .. }) = &k.value else {
            problems.push(problem(k.pos, format!("{path}: keys must be plain strings")));
            continue;
        };
        if !allowed.is_empty() && !allowed.contains(&text.as_str()) {
            let hint = suggest(text, allowed).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            problems.push(problem(
                k.pos,
                format!("{path}: unknown key `{text}`{hint}; expected one of {}", allowed.join(", ")),
            ));
            continue;
        }
        if out.iter().any(|(seen, _, _)| *seen == text.as_str()) {
            problems.push(problem(k.pos, format!("{path}: `{text}` is given twice")));
            continue;
        }
        out.push((text.as_str(), k.pos, v));
    }
    out
}

fn string(node: &Node, path: &str, problems: &mut Vec<Problem>) -> Option<String> {
    match &node.value {
        Value::Scalar(Scalar { text, forced_string }) if *forced_string || !text.is_empty() => {
            if text.trim().is_empty() {
                problems.push(problem(node.pos, format!("{path}: must not be empty")));
                return None;
            }
            Some(text.clone())
        }
        Value::Invalid => None,
        _ => {
            problems.push(problem(node.pos, format!("{path}: expected a string")));
            None
        }
    }
}

fn mode(node: &Node, path: &str, problems: &mut Vec<Problem>) -> Option<Mode> {
    let text = string(node, path, problems)?;
    let m = Mode::from_name(&text);
    if m.is_none() {
        problems.push(problem(node.pos, format!("{path}: `{text}` is not a mode: expected observe or enforce")));
    }
    m
}

fn window(node: &Node, path: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    let text = string(node, path, problems)?;
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(problem(node.pos, format!("{path}: {e}")));
            None
        }
    }
}

/// `name/vN`, as in saga definitions.
fn is_contract(s: &str) -> bool {
    s.split_once("/v").is_some_and(|(name, version)| {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            && version.chars().next().is_some_and(|c| ('1'..='9').contains(&c))
            && version.chars().all(|c| c.is_ascii_digit())
    })
}

fn expectation(node: &Node, path: &str, problems: &mut Vec<Problem>) -> Option<Expectation> {
    let before = problems.len();
    let mut expect = Expectation::default();
    let fields = mapping(node, path, EXPECT_KEYS, problems);
    for (key, _, value) in &fields {
        match *key {
            "version" => expect.version = string(value, &format!("{path}.version"), problems),
            "contracts" => {
                let Value::Seq(items) = &value.value else {
                    problems.push(problem(
                        value.pos,
                        format!("{path}.contracts: expected a list of contracts, e.g. [inventory/v1]"),
                    ));
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}.contracts[{i}]");
                    let Some(c) = string(item, &item_path, problems) else { continue };
                    if !is_contract(&c) {
                        problems.push(problem(
                            item.pos,
                            format!("{item_path}: `{c}` is not a contract: expected `name/vN`, e.g. `inventory/v1`"),
                        ));
                    } else if expect.contracts.contains(&c) {
                        problems.push(problem(item.pos, format!("{item_path}: `{c}` is listed twice")));
                    } else {
                        expect.contracts.push(c);
                    }
                }
            }
            _ => {}
        }
    }
    if problems.len() == before && expect.version.is_none() && expect.contracts.is_empty() {
        problems.push(problem(node.pos, format!("{path}: expects nothing; give `version`, `contracts` or both")));
    }
    expect.contracts.sort();
    (problems.len() == before).then_some(expect)
}

fn check_document(root: &Node, policy: &mut FleetPolicy, problems: &mut Vec<Problem>) {
    let top = mapping(root, "fleet policy", TOP_KEYS, problems);
    // `defaults` first: services inherit from it whatever their order in the file.
    if let Some((_, _, node)) = top.iter().find(|(k, _, _)| *k == "defaults") {
        for (key, _, value) in mapping(node, "defaults", DEFAULTS_KEYS, problems) {
            match key {
                "mode" => {
                    if let Some(m) = mode(value, "defaults.mode", problems) {
                        policy.defaults.mode = m;
                    }
                }
                "rolloutWindow" => {
                    if let Some(w) = window(value, "defaults.rolloutWindow", problems) {
                        policy.defaults.rollout_window = w;
                    }
                }
                _ => {}
            }
        }
    }
    let Some((_, _, services)) = top.iter().find(|(k, _, _)| *k == "services") else { return };
    if services.is_null() {
        return;
    }
    for (name, at, node) in mapping(services, "services", &[], problems) {
        let path = format!("services.{name}");
        // A name that cannot be a service's would be a policy for nothing,
        // and the service it was meant for would silently get the defaults.
        if !is_service_name(name) {
            problems.push(problem(
                at,
                format!(
                    "services: `{}` is not a service name: use at most 64 lowercase letters, digits and `-`, \
                     as saga definitions do",
                    name.chars().take(40).collect::<String>().escape_debug()
                ),
            ));
            continue;
        }
        let mut entry = policy.defaults.clone();
        if node.is_null() {
            policy.services.insert(name.to_string(), entry);
            continue;
        }
        for (key, _, value) in mapping(node, &path, SERVICE_KEYS, problems) {
            match key {
                "mode" => {
                    if let Some(m) = mode(value, &format!("{path}.mode"), problems) {
                        entry.mode = m;
                    }
                }
                "rolloutWindow" => {
                    if let Some(w) = window(value, &format!("{path}.rolloutWindow"), problems) {
                        entry.rollout_window = w;
                    }
                }
                "expect" => entry.expect = expectation(value, &format!("{path}.expect"), problems),
                _ => {}
            }
        }
        policy.services.insert(name.to_string(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match FleetPolicy::parse(text, Mode::Observe) {
            Ok(p) => panic!("expected problems, got {p:?}"),
            Err(ps) => ps.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_full_policy_parses_and_services_inherit_defaults() {
        let text = "\
services:
  inventory:
    mode: enforce
    expect:
      version: 0.1.0
      contracts: [inventory/v1]
  payment: {}
defaults:
  rolloutWindow: 5m
";
        let p = FleetPolicy::parse(text, Mode::Observe).unwrap();
        let inv = p.for_service("inventory");
        assert_eq!(inv.mode, Mode::Enforce);
        assert_eq!(inv.rollout_window, Duration::from_secs(300));
        assert_eq!(
            inv.expect,
            Some(Expectation { version: Some("0.1.0".into()), contracts: vec!["inventory/v1".into()] })
        );
        assert_eq!(p.for_service("payment").mode, Mode::Observe);
        assert_eq!(p.for_service("notification").rollout_window, Duration::from_secs(300));
    }

    #[test]
    fn empty_text_is_the_default_policy_in_the_given_mode() {
        assert_eq!(FleetPolicy::parse("", Mode::Enforce).unwrap(), FleetPolicy::with_mode(Mode::Enforce));
        assert_eq!(FleetPolicy::parse("# nothing\n", Mode::Observe).unwrap(), FleetPolicy::default());
        let p = FleetPolicy::parse("services:\n  inventory:\n", Mode::Enforce).unwrap();
        assert_eq!(p.for_service("inventory").mode, Mode::Enforce);
    }

    #[test]
    fn every_problem_is_reported_at_its_place() {
        let text = "\
defaults:
  mode: enfroce
services:
  inventory:
    rolloutWindw: 5m
    expect:
      contracts: [inventory, payment/v1, payment/v1]
  payment:
    rolloutWindow: 30
    expect: {}
extra: 1
";
        assert_eq!(
            problems(text),
            vec![
                "11:1: fleet policy: unknown key `extra`; expected one of defaults, services",
                "2:9: defaults.mode: `enfroce` is not a mode: expected observe or enforce",
                "5:5: services.inventory: unknown key `rolloutWindw` (did you mean `rolloutWindow`?); expected one of mode, rolloutWindow, expect",
                "7:19: services.inventory.expect.contracts[0]: `inventory` is not a contract: expected `name/vN`, e.g. `inventory/v1`",
                "7:42: services.inventory.expect.contracts[2]: `payment/v1` is listed twice",
                "9:20: services.payment.rolloutWindow: bad duration `30`: expected a number followed by ms, s, m, h or d (e.g. `500ms`, `30s`, `1m30s`)",
                "10:13: services.payment.expect: expects nothing; give `version`, `contracts` or both",
            ]
        );
    }

    #[test]
    fn syntax_errors_and_wrong_shapes_are_named() {
        assert!(problems("services: [\n")[0].contains("YAML syntax error"));
        assert_eq!(problems("- a\n"), vec!["1:1: fleet policy: expected a mapping (defaults, services)"]);
        assert_eq!(
            problems("services:\n  inventory: 3\n"),
            vec!["2:14: services.inventory: expected a mapping (mode, rolloutWindow, expect)"]
        );
        assert_eq!(problems("a: 1\n---\nb: 2\n")[0], "2:1: a fleet policy is one YAML document; remove this `---`");
    }

    /// Found by the `fleet_policy` fuzz target: any string was accepted as
    /// a service name (1000 characters with control characters, `Inventory`
    /// for `inventory`), a policy that applies to nothing while the service
    /// meant runs on the defaults.
    #[test]
    fn a_service_name_that_cannot_be_a_service_is_a_problem() {
        assert_eq!(
            problems("services:\n  Inventory:\n    mode: enforce\n  \"a\\fb\": {}\n  inventory: {}\n"),
            vec![
                "2:3: services: `Inventory` is not a service name: use at most 64 lowercase letters, digits and `-`, \
                 as saga definitions do",
                "4:3: services: `a\\u{c}b` is not a service name: use at most 64 lowercase letters, digits and `-`, \
                 as saga definitions do",
            ]
        );
        let long = "s".repeat(65);
        assert_eq!(problems(&format!("services:\n  {long}:\n")).len(), 1);
        assert!(FleetPolicy::parse(&format!("services:\n  {}:\n  0-a:\n", &long[..64]), Mode::Observe).is_ok());
    }
}
