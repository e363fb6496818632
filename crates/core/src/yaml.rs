//! Saga definitions from YAML text, with every problem reported at its
//! `line:col`.
//!
//! This module owns the YAML format (camelCase keys, documented by
//! `schema/saga-definition.schema.json`) and the defaults applied to steps that
//! omit a setting. It reads text, never files: the caller names the file when
//! it prints the problems with [`format_problems`].
//!
//! Parsing is two passes. The first (`marked.rs`, shared with the drift
//! guard's `fleet.yaml`) turns the parser's events into a small tree of
//! nodes that remember where they start; the second walks that tree,
//! collecting every problem instead of stopping at the first, so that
//! `sqsaga validate` shows an author all their mistakes at once.

use std::collections::HashMap;
use std::time::Duration;

use crate::definition::{RetryPolicy, SagaDefinition, StepDefinition, is_service_name};
use crate::duration::{format_duration, parse_duration};
use crate::marked::{Node, Options, Pos, Scalar, Value, parse_documents, suggest};
pub use crate::marked::{Problem, format_problems};

/// Keys of a saga document. The JSON Schema lists the same keys; a test keeps
/// the two in step.
pub const SAGA_KEYS: &[&str] = &["name", "version", "description", "deadline", "input", "defaults", "steps"];
/// Keys of one entry of `steps`.
pub const STEP_KEYS: &[&str] =
    &["name", "service", "action", "compensation", "timeout", "queueTimeout", "contract", "retry", "compensationRetry"];
/// Keys of a retry policy (`retry`, `compensationRetry`, in steps and in `defaults`).
pub const RETRY_KEYS: &[&str] = &["maxAttempts", "initialBackoff", "maxBackoff", "multiplier", "jitter"];
/// Keys of the `defaults` section.
pub const DEFAULTS_KEYS: &[&str] = &["timeout", "queueTimeout", "retry", "compensationRetry"];

/// Step timeout when neither the step nor `defaults` sets one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Action retries when neither the step nor `defaults` sets them.
pub fn default_retry() -> RetryPolicy {
    RetryPolicy::default()
}

/// Compensation retries when neither the step nor `defaults` sets them.
///
/// More attempts than for actions: a compensation has no business reason to
/// fail, and giving up means a human has to step in (`needs_operator`).
pub fn default_compensation_retry() -> RetryPolicy {
    RetryPolicy { max_attempts: 10, ..RetryPolicy::default() }
}

/// Deeper than any valid definition (document, steps, step, retry) by a wide
/// margin; the limit keeps hostile input from building a tree whose drop
/// would overflow the stack.
const MAX_DEPTH: usize = 32;

/// The marked tree of every saga document in `text`.
fn build_documents(text: &str) -> (Vec<Node>, Vec<Problem>) {
    let (docs, problems) = parse_documents(text, Options { max_depth: MAX_DEPTH, what: "saga definitions" });
    (docs.into_iter().map(|d| d.root).collect(), problems)
}

/// Parses a text holding exactly one saga definition.
pub fn parse_definition(text: &str) -> Result<SagaDefinition, Vec<Problem>> {
    let (docs, mut problems) = build_documents(text);
    let mut found: Option<SagaDefinition> = None;
    let mut first_line = None;
    for doc in &docs {
        if let Some(line) = first_line {
            problems.push(Problem::at(
                doc.pos,
                format!(
                    "expected a single saga definition, but another document starts here (the first is on line {line})"
                ),
            ));
            continue;
        }
        first_line = Some(doc.pos.line);
        found = Checker::check_document(doc, &mut problems);
    }
    finish(found, problems)
}

/// Parses a text holding any number of saga definitions, one per YAML
/// document (separated by `---`). Empty documents are skipped; a text with no
/// definition at all is a problem.
pub fn parse_definitions(text: &str) -> Result<Vec<SagaDefinition>, Vec<Problem>> {
    let (docs, mut problems) = build_documents(text);
    let mut out = Vec::new();
    // (name, version) -> line of the first definition, to catch the same saga twice.
    let mut seen: HashMap<(String, u32), usize> = HashMap::new();
    for doc in &docs {
        if let Some(def) = Checker::check_document(doc, &mut problems) {
            let key = (def.name.clone(), def.version);
            if let Some(line) = seen.get(&key) {
                problems.push(Problem::at(
                    doc.pos,
                    format!("saga `{}` version {} is already defined on line {line}", def.name, def.version),
                ));
            } else {
                seen.insert(key, doc.pos.line);
            }
            out.push(def);
        }
    }
    if docs.is_empty() && problems.is_empty() {
        return finish(None, problems);
    }
    finish(Some(out), problems)
}

/// `value` if nothing was wrong, else the problems in text order. A missing
/// value with no problem to show for it means the text held no definition.
fn finish<T>(value: Option<T>, mut problems: Vec<Problem>) -> Result<T, Vec<Problem>> {
    match value {
        Some(value) if problems.is_empty() => Ok(value),
        _ => {
            if problems.is_empty() {
                problems.push(Problem::new(
                    1,
                    1,
                    "no saga definition found: the text holds no YAML document, or only empty ones",
                ));
            }
            // Stable: problems at the same spot keep the order they were found in.
            problems.sort_by_key(|p| (p.line, p.col));
            Err(problems)
        }
    }
}

/// What a scalar means under YAML 1.2's core schema (the subset we need).
enum Resolved {
    Null,
    Bool,
    /// `None` when the digits do not fit an `i64`.
    Int(Option<i64>),
    Float(f64),
    Str,
}

fn resolve(s: &Scalar) -> Resolved {
    if s.forced_string {
        return Resolved::Str;
    }
    let t = s.text.as_str();
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return Resolved::Bool,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Resolved::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Resolved::Int(t.parse().ok());
    }
    if let Some(hex) = t.strip_prefix("0x").filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Resolved::Int(i64::from_str_radix(hex, 16).ok());
    }
    if let Some(oct) = t.strip_prefix("0o").filter(|o| !o.is_empty() && o.bytes().all(|b| (b'0'..=b'7').contains(&b))) {
        return Resolved::Int(i64::from_str_radix(oct, 8).ok());
    }
    if let (true, Ok(f)) = (looks_like_float(t), t.parse::<f64>()) {
        return Resolved::Float(f);
    }
    Resolved::Str
}

/// A node as JSON, scalars resolved by the YAML core schema (for the
/// `input` JSON Schema, which is data, not definition syntax).
fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Scalar(s) => match resolve(s) {
            Resolved::Null => J::Null,
            Resolved::Bool => J::Bool(s.text.eq_ignore_ascii_case("true")),
            Resolved::Int(Some(i)) => J::from(i),
            Resolved::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
            Resolved::Int(None) | Resolved::Str => J::String(s.text.clone()),
        },
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| match &k.value {
                    Value::Scalar(s) => (s.text.clone(), to_json(v)),
                    _ => (describe(k), to_json(v)),
                })
                .collect(),
        ),
        Value::Invalid => J::Null,
    }
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn looks_like_float(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        all_digits(int) && frac.is_none_or(all_digits) && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

/// "string `abc`", "a mapping", ... for "expected X, found Y" messages.
fn describe(node: &Node) -> String {
    match &node.value {
        Value::Seq(_) => "a sequence".to_string(),
        Value::Map(_) => "a mapping".to_string(),
        Value::Invalid => "an alias".to_string(),
        Value::Scalar(s) => {
            let kind = match resolve(s) {
                Resolved::Null => return "nothing (null)".to_string(),
                Resolved::Bool => "boolean",
                Resolved::Int(_) => "integer",
                Resolved::Float(_) => "number",
                Resolved::Str => "string",
            };
            format!("{kind} `{}`", shorten(&s.text))
        }
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    let one_line = text.replace('\n', "\\n");
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

// ---------------------------------------------------------------------------
// Pass 2: node tree -> SagaDefinition, collecting problems.

/// The entries of a mapping whose keys have been checked: strings, known,
/// no duplicates. Lookups return the first occurrence.
struct Fields<'a> {
    pos: Pos,
    path: String,
    entries: Vec<(&'a str, &'a Node)>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// A retry policy as written in one place, each field with where it was set.
#[derive(Debug, Clone, Default)]
struct PartialRetry {
    max_attempts: Option<u32>,
    initial_backoff: Option<(Duration, Pos)>,
    max_backoff: Option<(Duration, Pos)>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
}

impl PartialRetry {
    /// `self` where set, else `fallback`.
    fn or(&self, fallback: &PartialRetry) -> PartialRetry {
        PartialRetry {
            max_attempts: self.max_attempts.or(fallback.max_attempts),
            initial_backoff: self.initial_backoff.or(fallback.initial_backoff),
            max_backoff: self.max_backoff.or(fallback.max_backoff),
            multiplier: self.multiplier.or(fallback.multiplier),
            jitter: self.jitter.or(fallback.jitter),
        }
    }

    fn resolve(&self, base: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            initial_backoff: self.initial_backoff.map_or(base.initial_backoff, |(d, _)| d),
            max_backoff: self.max_backoff.map_or(base.max_backoff, |(d, _)| d),
            multiplier: self.multiplier.unwrap_or(base.multiplier),
            jitter: self.jitter.unwrap_or(base.jitter),
        }
    }
}

#[derive(Default)]
struct Defaults {
    timeout: Option<Duration>,
    queue_timeout: Option<Duration>,
    retry: PartialRetry,
    compensation_retry: PartialRetry,
}

/// A step after pass 2, with the positions the saga-level checks point at.
struct CheckedStep {
    pos: Pos,
    name: Option<(String, Pos)>,
    /// Where the compensation is written, if any.
    compensation_pos: Option<Pos>,
    /// `None` when the step sets no timeout of its own.
    own_timeout: Option<(Duration, Pos)>,
    definition: Option<StepDefinition>,
}

struct Checker<'p> {
    problems: &'p mut Vec<Problem>,
}

impl Checker<'_> {
    fn check_document(root: &Node, problems: &mut Vec<Problem>) -> Option<SagaDefinition> {
        Checker { problems }.saga(root)
    }

    fn report(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem::at(pos, message));
    }

    // -- the saga document --------------------------------------------------

    fn saga(&mut self, root: &Node) -> Option<SagaDefinition> {
        let fields = self.mapping(root, "", "saga definition", SAGA_KEYS)?;
        let name = self.required(&fields, "name").and_then(|n| self.name(n, "name"));
        let version = self.required(&fields, "version").and_then(|n| self.version(n));
        let description = fields.get("description").and_then(|n| self.string(n, "description"));
        let input_schema = match fields.get("input") {
            Some(node) if matches!(node.value, Value::Map(_)) => Some(to_json(node)),
            Some(node) => return self.type_mismatch(node, "input", "a mapping (a JSON Schema of the start input)"),
            None => None,
        };
        let deadline = self.required(&fields, "deadline").and_then(|n| self.positive_duration(n, "deadline"));
        let defaults = match fields.get("defaults") {
            Some(node) => self.defaults(node, deadline),
            None => Some(Defaults::default()),
        };
        let steps = self.required(&fields, "steps").and_then(|n| self.steps(n, deadline, defaults.as_ref()));

        if let (Some(deadline), Some(defaults), Some((steps, _))) = (deadline, &defaults, &steps) {
            // Steps that fall back to the built-in timeout: one problem at the
            // deadline rather than one per step.
            if defaults.timeout.is_none() && deadline <= DEFAULT_STEP_TIMEOUT {
                let using: Vec<String> = steps
                    .iter()
                    .filter(|s| s.own_timeout.is_none())
                    .map(|s| s.name.as_ref().map_or_else(|| "?".to_string(), |(n, _)| format!("`{n}`")))
                    .collect();
                if let Some(node) = fields.get("deadline").filter(|_| !using.is_empty()) {
                    let message = format!(
                        "deadline: {} is not longer than the default step timeout {} used by {} {}; \
                         set `timeout` on the step or in `defaults`",
                        format_duration(deadline),
                        format_duration(DEFAULT_STEP_TIMEOUT),
                        if using.len() == 1 { "step" } else { "steps" },
                        using.join(", ")
                    );
                    self.report(node.pos, message);
                }
            }
        }

        let (steps, every_step_is_a_mapping) = steps?;
        if defaults.is_none() || !every_step_is_a_mapping {
            return None;
        }
        let steps = steps.into_iter().map(|s| s.definition).collect::<Option<Vec<_>>>()?;
        Some(SagaDefinition { name: name?, version: version?, description, deadline: deadline?, steps, input_schema })
    }

    fn version(&mut self, node: &Node) -> Option<u32> {
        let v = self.integer(node, "version")?;
        match u32::try_from(v) {
            Ok(v) if v >= 1 => Some(v),
            _ => {
                self.report(node.pos, format!("version: must be an integer from 1 to {}, found {v}", u32::MAX));
                None
            }
        }
    }

    fn defaults(&mut self, node: &Node, deadline: Option<Duration>) -> Option<Defaults> {
        let fields = self.mapping(node, "defaults", "defaults", DEFAULTS_KEYS)?;
        let mut ok = true;
        let mut defaults = Defaults::default();
        if let Some(n) = fields.get("timeout") {
            match self.step_timeout(n, "defaults.timeout", deadline) {
                Some((d, _)) => defaults.timeout = Some(d),
                None => ok = false,
            }
        }
        if let Some(n) = fields.get("queueTimeout") {
            match self.step_timeout(n, "defaults.queueTimeout", deadline) {
                Some((d, _)) => defaults.queue_timeout = Some(d),
                None => ok = false,
            }
        }
        for (key, base, slot) in [
            ("retry", default_retry(), &mut defaults.retry),
            ("compensationRetry", default_compensation_retry(), &mut defaults.compensation_retry),
        ] {
            if let Some(n) = fields.get(key) {
                match self.retry(n, &format!("defaults.{key}"), &PartialRetry::default(), &base) {
                    Some(partial) => *slot = partial,
                    None => ok = false,
                }
            }
        }
        ok.then_some(defaults)
    }

    fn steps(
        &mut self,
        node: &Node,
        deadline: Option<Duration>,
        defaults: Option<&Defaults>,
    ) -> Option<(Vec<CheckedStep>, bool)> {
        let items = match &node.value {
            Value::Seq(items) => items,
            Value::Invalid => return None,
            _ => {
                self.report(node.pos, format!("steps: expected a sequence of steps, found {}", describe(node)));
                return None;
            }
        };
        if items.is_empty() {
            self.report(node.pos, "steps: a saga needs at least one step");
            return None;
        }
        let fallback = Defaults::default();
        let defaults_or_fallback = defaults.unwrap_or(&fallback);
        let steps: Vec<CheckedStep> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.step(item, &format!("steps[{i}]"), deadline, defaults_or_fallback))
            .collect();

        let mut first_seen: HashMap<&str, Pos> = HashMap::new();
        for step in &steps {
            if let Some((name, pos)) = &step.name {
                if let Some(first) = first_seen.get(name.as_str()) {
                    self.report(*pos, format!("duplicate step name `{name}` (first used on line {})", first.line));
                } else {
                    first_seen.insert(name, *pos);
                }
            }
        }

        // A step that cannot be undone is a point of no return: every step
        // after it must not need undoing either, or a later failure would
        // leave the saga half done.
        let mut pivot: Option<&CheckedStep> = None;
        for step in &steps {
            match (step.compensation_pos, pivot) {
                (None, None) => pivot = Some(step),
                (Some(at), Some(before)) => self.report(
                    at,
                    format!(
                        "step {} has a compensation but comes after {}, which cannot be compensated; \
                         steps without compensation must come last",
                        step_label(step),
                        step_label(before)
                    ),
                ),
                _ => {}
            }
        }

        let every_step_is_a_mapping = steps.len() == items.len();
        Some((steps, every_step_is_a_mapping))
    }

    fn step(
        &mut self,
        node: &Node,
        path: &str,
        deadline: Option<Duration>,
        defaults: &Defaults,
    ) -> Option<CheckedStep> {
        let fields = self.mapping(node, path, "step", STEP_KEYS)?;
        let name_node = self.required(&fields, "name");
        let name = name_node.and_then(|n| self.name(n, &format!("{path}.name")));
        let service = self.required(&fields, "service").and_then(|n| self.service(n, &format!("{path}.service")));
        let action = self.required(&fields, "action").and_then(|n| self.command(n, &format!("{path}.action")));
        let compensation_node = fields.get("compensation");
        let compensation = match compensation_node {
            Some(n) => self.command(n, &format!("{path}.compensation")).map(Some),
            None => Some(None),
        };
        let own_timeout = match fields.get("timeout") {
            Some(n) => self.step_timeout(n, &format!("{path}.timeout"), deadline).map(Some),
            None => Some(None),
        };
        let queue_timeout = match fields.get("queueTimeout") {
            Some(n) => self.step_timeout(n, &format!("{path}.queueTimeout"), deadline).map(|(d, _)| Some(d)),
            None => Some(None),
        };
        let contract = self.required(&fields, "contract").and_then(|n| self.contract(n, &format!("{path}.contract")));
        let retry = match fields.get("retry") {
            Some(n) => self.retry(n, &format!("{path}.retry"), &defaults.retry, &default_retry()),
            None => Some(PartialRetry::default()),
        };
        let compensation_retry = match fields.get("compensationRetry") {
            Some(n) => self.retry(
                n,
                &format!("{path}.compensationRetry"),
                &defaults.compensation_retry,
                &default_compensation_retry(),
            ),
            None => Some(PartialRetry::default()),
        };

        let timeouts = own_timeout.zip(queue_timeout);
        let definition =
            match (name.clone(), service, action, compensation, timeouts, contract, retry, compensation_retry) {
                (
                    Some(name),
                    Some(service),
                    Some(action),
                    Some(compensation),
                    Some((own_timeout, queue_timeout)),
                    Some(contract),
                    Some(retry),
                    Some(compensation_retry),
                ) => Some(StepDefinition {
                    name,
                    service,
                    action,
                    compensation,
                    timeout: own_timeout.map(|(d, _)| d).or(defaults.timeout).unwrap_or(DEFAULT_STEP_TIMEOUT),
                    queue_timeout: queue_timeout.or(defaults.queue_timeout),
                    retry: retry.or(&defaults.retry).resolve(&default_retry()),
                    compensation_retry: compensation_retry
                        .or(&defaults.compensation_retry)
                        .resolve(&default_compensation_retry()),
                    contract,
                }),
                _ => None,
            };
        Some(CheckedStep {
            pos: fields.pos,
            name: name.zip(name_node.map(|n| n.pos)),
            compensation_pos: compensation_node.map(|n| n.pos),
            own_timeout: own_timeout.flatten(),
            definition,
        })
    }

    /// Checks a retry policy written at `path`. `inherited` is what the
    /// policy falls back to (the `defaults` section), `base` the built-in
    /// policy under it; together they decide whether the effective initial
    /// backoff exceeds the maximum.
    fn retry(&mut self, node: &Node, path: &str, inherited: &PartialRetry, base: &RetryPolicy) -> Option<PartialRetry> {
        let fields = self.mapping(node, path, "retry policy", RETRY_KEYS)?;
        let mut ok = true;
        let mut own = PartialRetry::default();
        if let Some(n) = fields.get("maxAttempts") {
            let key = format!("{path}.maxAttempts");
            match self.integer(n, &key) {
                Some(v) => match u32::try_from(v) {
                    Ok(v) if v >= 1 => own.max_attempts = Some(v),
                    _ => {
                        self.report(n.pos, format!("{key}: must be an integer from 1 to {}, found {v}", u32::MAX));
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        for (key, slot) in [("initialBackoff", &mut own.initial_backoff), ("maxBackoff", &mut own.max_backoff)] {
            if let Some(n) = fields.get(key) {
                match self.duration(n, &format!("{path}.{key}")) {
                    Some(d) => *slot = Some((d, n.pos)),
                    None => ok = false,
                }
            }
        }
        if let Some(n) = fields.get("multiplier") {
            let key = format!("{path}.multiplier");
            match self.number(n, &key) {
                Some(m) if m.is_finite() && m >= 1.0 => own.multiplier = Some(m),
                Some(m) => {
                    self.report(n.pos, format!("{key}: must be a number of at least 1.0, found {m}"));
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(n) = fields.get("jitter") {
            let key = format!("{path}.jitter");
            match self.number(n, &key) {
                Some(j) if (0.0..=1.0).contains(&j) => own.jitter = Some(j),
                Some(j) => {
                    self.report(n.pos, format!("{key}: must be a number from 0.0 to 1.0, found {j}"));
                    ok = false;
                }
                None => ok = false,
            }
        }
        // Only judge the pair when this policy sets one of the two: a bad
        // pair inherited from `defaults` is reported there, once.
        if ok && (own.initial_backoff.is_some() || own.max_backoff.is_some()) {
            let merged = own.or(inherited);
            let effective = merged.resolve(base);
            if effective.initial_backoff > effective.max_backoff {
                let at = own.initial_backoff.or(own.max_backoff).map_or(fields.pos, |(_, p)| p);
                let origin = |set_here: bool| if set_here { "" } else { " (inherited)" };
                self.report(
                    at,
                    format!(
                        "{path}: initialBackoff {}{} must not exceed maxBackoff {}{}",
                        format_duration(effective.initial_backoff),
                        origin(own.initial_backoff.is_some()),
                        format_duration(effective.max_backoff),
                        origin(own.max_backoff.is_some()),
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(own)
    }

    // -- field checks -------------------------------------------------------

    /// A step timeout: a positive duration shorter than the saga deadline
    /// (when the deadline itself is valid).
    fn step_timeout(&mut self, node: &Node, key: &str, deadline: Option<Duration>) -> Option<(Duration, Pos)> {
        let d = self.positive_duration(node, key)?;
        if let Some(deadline) = deadline.filter(|deadline| d >= *deadline) {
            self.report(
                node.pos,
                format!(
                    "{key}: {} must be shorter than the saga deadline {}",
                    format_duration(d),
                    format_duration(deadline)
                ),
            );
            return None;
        }
        Some((d, node.pos))
    }

    /// Saga and step names: `[a-z][a-z0-9_-]*`.
    fn name(&mut self, node: &Node, key: &str) -> Option<String> {
        let s = self.string(node, key)?;
        let mut chars = s.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            self.report(
                node.pos,
                format!(
                    "{key}: `{}` is not a valid name: use lowercase letters, digits, `_` and `-`, \
                     starting with a letter",
                    shorten(&s)
                ),
            );
            return None;
        }
        Some(s)
    }

    /// Services become queue names: `[a-z0-9][a-z0-9-]*`, at most 64 characters.
    fn service(&mut self, node: &Node, key: &str) -> Option<String> {
        let s = self.string(node, key)?;
        if !is_service_name(&s) {
            self.report(
                node.pos,
                format!(
                    "{key}: `{}` is not a valid service name: it becomes a queue name, \
                     so use at most 64 lowercase letters, digits and `-`",
                    shorten(&s)
                ),
            );
            return None;
        }
        Some(s)
    }

    /// Action and compensation commands: non-empty, no whitespace.
    fn command(&mut self, node: &Node, key: &str) -> Option<String> {
        let s = self.string(node, key)?;
        if s.is_empty() {
            self.report(node.pos, format!("{key}: must not be empty"));
            return None;
        }
        if s.chars().any(char::is_whitespace) {
            self.report(node.pos, format!("{key}: `{}` must not contain whitespace", shorten(&s)));
            return None;
        }
        Some(s)
    }

    /// Handler contracts: `name/vN`, e.g. `inventory/v1`.
    fn contract(&mut self, node: &Node, key: &str) -> Option<String> {
        let s = self.string(node, key)?;
        let ok = s.split_once("/v").is_some_and(|(name, version)| {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
                && version.chars().next().is_some_and(|c| ('1'..='9').contains(&c))
                && version.chars().all(|c| c.is_ascii_digit())
        });
        if !ok {
            self.report(
                node.pos,
                format!("{key}: `{}` is not a contract: expected `name/vN`, e.g. `inventory/v1`", shorten(&s)),
            );
            return None;
        }
        Some(s)
    }

    // -- typed accessors ----------------------------------------------------

    /// Checks that `node` is a mapping whose keys are unique strings from
    /// `allowed`, reporting every key that is not.
    fn mapping<'a>(&mut self, node: &'a Node, path: &str, what: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Invalid => return None,
            _ => {
                let subject = if path.is_empty() { what.to_string() } else { format!("{path}: {what}") };
                self.report(node.pos, format!("{subject}: expected a mapping, found {}", describe(node)));
                return None;
            }
        };
        let prefix = if path.is_empty() { String::new() } else { format!("{path}: ") };
        let mut fields = Fields { pos: node.pos, path: path.to_string(), entries: Vec::new() };
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        for (key, value) in entries {
            let Value::Scalar(Scalar { text, .. }) = &key.value else {
                if !matches!(key.value, Value::Invalid) {
                    self.report(key.pos, format!("{prefix}keys must be plain strings, found {}", describe(key)));
                }
                continue;
            };
            if let Some(line) = first_line.get(text.as_str()) {
                self.report(key.pos, format!("{prefix}duplicate key `{}` (first on line {line})", shorten(text)));
                continue;
            }
            first_line.insert(text, key.pos.line);
            if !allowed.contains(&text.as_str()) {
                let hint = suggest(text, allowed).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                self.report(
                    key.pos,
                    format!("{prefix}unknown key `{}`{hint}; allowed keys: {}", shorten(text), allowed.join(", ")),
                );
                continue;
            }
            fields.entries.push((text.as_str(), value));
        }
        Some(fields)
    }

    /// The value of a required key, or a problem at the mapping.
    fn required<'a>(&mut self, fields: &Fields<'a>, key: &str) -> Option<&'a Node> {
        let found = fields.get(key);
        if found.is_none() {
            let message = if fields.path.is_empty() {
                format!("missing required key `{key}`")
            } else {
                format!("{}: missing required key `{key}`", fields.path)
            };
            self.report(fields.pos, message);
        }
        found
    }

    fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s) if matches!(resolve(s), Resolved::Str) => Some(s.text.clone()),
            _ => self.type_mismatch(node, key, "a string"),
        }
    }

    fn integer(&mut self, node: &Node, key: &str) -> Option<i64> {
        if let Value::Scalar(s) = &node.value {
            match resolve(s) {
                Resolved::Int(Some(v)) => return Some(v),
                Resolved::Int(None) => {
                    self.report(node.pos, format!("{key}: integer `{}` is too large", shorten(&s.text)));
                    return None;
                }
                _ => {}
            }
        }
        self.type_mismatch(node, key, "an integer")
    }

    fn number(&mut self, node: &Node, key: &str) -> Option<f64> {
        if let Value::Scalar(s) = &node.value {
            match resolve(s) {
                Resolved::Float(f) => return Some(f),
                // Exact for every integer a multiplier or jitter could sensibly be.
                Resolved::Int(Some(v)) => return Some(v as f64),
                _ => {}
            }
        }
        self.type_mismatch(node, key, "a number")
    }

    /// Any non-null scalar is handed to [`parse_duration`], so `timeout: 30`
    /// gets its explanation of why a bare number is refused.
    fn duration(&mut self, node: &Node, key: &str) -> Option<Duration> {
        match &node.value {
            Value::Scalar(s) if !matches!(resolve(s), Resolved::Null) => match parse_duration(&s.text) {
                Ok(d) => return Some(d),
                Err(e) => {
                    self.report(node.pos, format!("{key}: {e}"));
                    return None;
                }
            },
            _ => {}
        }
        self.type_mismatch(node, key, "a duration such as `30s`")
    }

    fn positive_duration(&mut self, node: &Node, key: &str) -> Option<Duration> {
        let d = self.duration(node, key)?;
        if d.is_zero() {
            self.report(node.pos, format!("{key}: must be longer than zero"));
            return None;
        }
        Some(d)
    }

    fn type_mismatch<T>(&mut self, node: &Node, key: &str, expected: &str) -> Option<T> {
        if !matches!(node.value, Value::Invalid) {
            self.report(node.pos, format!("{key}: expected {expected}, found {}", describe(node)));
        }
        None
    }
}

fn step_label(step: &CheckedStep) -> String {
    match &step.name {
        Some((name, _)) => format!("`{name}`"),
        None => format!("at line {}", step.pos.line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_core_schema_scalars() {
        let kind = |t: &str| match resolve(&Scalar { text: t.to_string(), forced_string: false }) {
            Resolved::Null => "null",
            Resolved::Bool => "bool",
            Resolved::Int(_) => "int",
            Resolved::Float(_) => "float",
            Resolved::Str => "str",
        };
        for (text, want) in [
            ("", "null"),
            ("~", "null"),
            ("true", "bool"),
            ("12", "int"),
            ("-3", "int"),
            ("0x1f", "int"),
            ("1.5", "float"),
            (".5", "float"),
            ("1e3", "float"),
            (".inf", "float"),
            ("10s", "str"),
            ("1.2.3", "str"),
            ("e3", "str"),
            (".", "str"),
            ("inventory/v1", "str"),
        ] {
            assert_eq!(kind(text), want, "{text:?}");
        }
    }

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(suggest("max_attempts", RETRY_KEYS), Some("maxAttempts"));
        assert_eq!(suggest("jiter", RETRY_KEYS), Some("jitter"));
        assert_eq!(suggest("compensaton", STEP_KEYS), Some("compensation"));
        assert_eq!(suggest("retries", STEP_KEYS), Some("retry"));
        assert_eq!(suggest("timeoutMs", STEP_KEYS), Some("timeout"));
        assert_eq!(suggest("colour", STEP_KEYS), None);
        assert_eq!(suggest("max", RETRY_KEYS), None);
        assert_eq!(suggest("desc", SAGA_KEYS), Some("description"));
        assert_eq!(suggest("stepz", SAGA_KEYS), Some("steps"));
    }
}
