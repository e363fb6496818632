//! Resolution: walks [`SETTINGS`] over the sources (flags, environment map,
//! JSON file, defaults), parses and checks every value found in any source,
//! and returns typed [`Settings`] or every problem at once.
//!
//! Precedence is flag > env (primary variable, then its fallbacks) > file >
//! default. Lower-ranked values are still checked: a bad line in config.json
//! is reported even while an environment variable hides it, because it
//! bites the day that variable goes away. An empty value (`FOO=`, `""` or
//! `null` in the file) means unset, as it does for the seed's `os.Getenv`.
//!
//! This file never reads the process environment: it gets a map (the seam
//! is [`crate::env_map`]), so tests pass maps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use sqsaga_core::duration::{DurationError, format_duration, parse_duration};

use crate::choices::{Backend, DriftMode, LogLevel, SqsPreset};
use crate::database::DatabaseUrl;
use crate::error::{ConfigErrors, ConfigProblem};
use crate::secret::Secret;
use crate::settings::{Origin, Settings};
use crate::spec::{
    CONFIG_ENV, CharSet, ENV_PREFIX, Kind, SETTINGS, SettingSpec, known_env_vars, known_file_keys, spec, suggest,
};

/// The inputs of one resolution. Flags are keyed by canonical key (`data_dir`),
/// not by flag spelling, so the CLI passes what clap parsed without
/// knowing the table's flag names.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    /// Values given on the command line, by canonical key; only settings with
    /// a `flag` in the table may appear here.
    pub flags: BTreeMap<String, String>,
    /// The environment, as returned by [`crate::env_map`] (or built by a test).
    pub env: &'a BTreeMap<String, String>,
    /// The config file from `--config`; when `None`, `SQSAGA_CONFIG` in `env` is used.
    pub config_path: Option<PathBuf>,
}

impl<'a> Sources<'a> {
    /// Sources with only an environment: no flags, no `--config`.
    pub fn new(env: &'a BTreeMap<String, String>) -> Self {
        Sources { flags: BTreeMap::new(), env, config_path: None }
    }

    /// Adds a flag value for canonical key `key`.
    pub fn with_flag(mut self, key: &str, value: impl Into<String>) -> Self {
        self.flags.insert(key.to_string(), value.into());
        self
    }

    /// Sets the `--config` path.
    pub fn with_config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = Some(path.into());
        self
    }

    /// The config file to read: `--config`, else `SQSAGA_CONFIG`.
    pub fn config_file(&self) -> Option<PathBuf> {
        self.config_path.clone().or_else(|| self.env.get(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
    }
}

/// A value as found in one source, before parsing.
#[derive(Clone, Copy)]
enum Raw<'v> {
    /// From a flag, an environment variable or a built-in default.
    Text(&'v str),
    /// From the JSON file.
    Json(&'v Value),
}

/// A value that passed its setting's checks.
#[derive(Debug, Clone)]
enum Parsed {
    Text(String),
    Int(u64),
    Duration(Duration),
    Bool(bool),
    Addr(SocketAddr),
    Secret(Secret),
    Database(DatabaseUrl),
}

/// The value a setting ended up with, and where it came from.
struct Winner {
    value: Parsed,
    origin: Origin,
    /// How an error message would point at it (``SQSAGA_X=v``, ``file: `x` = v``).
    location: String,
}

/// A value found in one source.
struct Candidate<'v> {
    origin: Origin,
    raw: Raw<'v>,
    location: String,
}

impl Settings {
    /// Resolves the configuration from `sources`. On failure the error holds
    /// every problem found, not just the first.
    pub fn resolve(sources: &Sources<'_>) -> Result<Settings, ConfigErrors> {
        let config_file = sources.config_file();
        let text = config_file
            .as_deref()
            .map(|path| std::fs::read_to_string(path).map_err(|e| format!("cannot read config file: {e}")));
        resolve_with(sources, config_file, text)
    }

    /// [`Settings::resolve`] with the config file's text given instead of
    /// read: `path` only names it in problems and in [`Origin::File`], and
    /// `sources.config_path` is ignored. Pure but for the default instance
    /// id, which reads the hostname when `HOSTNAME` is not in `sources.env`.
    /// What the `config_file` fuzz target drives.
    pub fn resolve_with_file_text(sources: &Sources<'_>, path: &Path, text: &str) -> Result<Settings, ConfigErrors> {
        resolve_with(sources, Some(path.to_path_buf()), Some(Ok(text.to_string())))
    }
}

/// Resolution once the config file (if any) is read: `text` is its content
/// or why it could not be read.
fn resolve_with(
    sources: &Sources<'_>,
    config_file: Option<PathBuf>,
    text: Option<Result<String, String>>,
) -> Result<Settings, ConfigErrors> {
    let mut problems = Vec::new();
    check_env_names(sources.env, &mut problems);
    check_flag_names(&sources.flags, &mut problems);
    let file = config_file.as_deref().zip(text).and_then(|(path, text)| load_file(path, text, &mut problems));

    let mut winners = BTreeMap::new();
    for spec in SETTINGS {
        let file = file.as_ref().zip(config_file.as_deref());
        if let Some(winner) = resolve_setting(spec, sources, file, &mut problems) {
            winners.insert(spec.key, winner);
        }
    }
    cross_check(&winners, &mut problems);
    if problems.is_empty() { Ok(build(&winners, config_file)) } else { Err(ConfigErrors(problems)) }
}

/// Unknown `SQSAGA_*` variables are typos; everything else in the
/// environment belongs to someone else.
fn check_env_names(env: &BTreeMap<String, String>, problems: &mut Vec<ConfigProblem>) {
    let known: BTreeSet<&str> = known_env_vars().into_iter().collect();
    for name in env.keys().filter(|n| n.starts_with(ENV_PREFIX) && !known.contains(n.as_str())) {
        // `SQSAGA_QUEUE_URL` for `SQS_QUEUE_URL`, `SQSAGA_REGION` for `REGION`.
        let by_key = spec(&name[ENV_PREFIX.len()..].to_ascii_lowercase()).map(|s| s.env);
        let hint = by_key.or_else(|| suggest(name, known.iter().copied().filter(|k| k.starts_with(ENV_PREFIX))));
        problems.push(ConfigProblem {
            location: name.clone(),
            key: None,
            message: format!("unknown variable{}", did_you_mean(hint)),
        });
    }
}

fn check_flag_names(flags: &BTreeMap<String, String>, problems: &mut Vec<ConfigProblem>) {
    for key in flags.keys() {
        let message = match spec(key) {
            None => "unknown flag".to_string(),
            Some(s) if s.flag.is_none() => {
                format!("`{key}` has no command-line flag; set {} or `{key}` in the file", s.env)
            }
            Some(_) => continue,
        };
        problems.push(ConfigProblem { location: format!("--{}", key.replace('_', "-")), key: None, message });
    }
}

/// Parses the JSON file read from `path` (`text`: its content, or why it
/// could not be read); `None` (with a problem) when it is missing,
/// unreadable, not JSON, or not an object. Unknown keys are reported here.
fn load_file(
    path: &Path,
    text: Result<String, String>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Map<String, Value>> {
    let mut fail = |message: String| {
        problems.push(ConfigProblem { location: path.display().to_string(), key: None, message });
        None
    };
    let text = match text {
        Ok(text) => text,
        Err(message) => return fail(message),
    };
    let map = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return fail(format!("expected a JSON object of settings, found {}", json_type(&other)));
        }
        Err(e) => return fail(format!("not valid JSON: {e}")),
    };
    for key in map.keys().filter(|k| spec(k).is_none()) {
        // An environment variable's name used as a key (`SQS_QUEUE_URL`).
        let by_env = SETTINGS
            .iter()
            .find(|s| std::iter::once(&s.env).chain(s.env_fallbacks).any(|e| e.eq_ignore_ascii_case(key)))
            .map(|s| s.key);
        let hint = by_env.or_else(|| suggest(key, known_file_keys()));
        problems.push(ConfigProblem {
            location: path.display().to_string(),
            key: None,
            message: format!("unknown key `{key}`{}", did_you_mean(hint)),
        });
    }
    Some(map)
}

fn did_you_mean(hint: Option<&str>) -> String {
    hint.map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default()
}

/// Finds `spec`'s value in every source, checks each, and returns the
/// highest-ranked one (or the default).
fn resolve_setting(
    spec: &'static SettingSpec,
    sources: &Sources<'_>,
    file: Option<(&Map<String, Value>, &Path)>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Winner> {
    let mut candidates = Vec::new();
    if let Some(flag) = spec.flag
        && let Some(v) = sources.flags.get(spec.key).filter(|v| !v.is_empty())
    {
        let location = format!("{flag}={}", shown(spec, &Raw::Text(v)));
        candidates.push(Candidate { origin: Origin::Flag(flag), raw: Raw::Text(v), location });
    }
    for name in std::iter::once(&spec.env).chain(spec.env_fallbacks) {
        if let Some(v) = sources.env.get(*name).filter(|v| !v.is_empty()) {
            let location = format!("{name}={}", shown(spec, &Raw::Text(v)));
            candidates.push(Candidate { origin: Origin::Env(name), raw: Raw::Text(v), location });
        }
    }
    if let Some((map, path)) = file {
        let value = map.get(spec.key).filter(|v| !v.is_null() && v.as_str() != Some(""));
        if let Some(v) = value {
            let location = format!("{}: `{}` = {}", path.display(), spec.key, shown(spec, &Raw::Json(v)));
            let origin = Origin::File(path.to_path_buf());
            candidates.push(Candidate { origin, raw: Raw::Json(v), location });
        }
    }

    let mut winner = None;
    let mut first = true;
    for candidate in candidates {
        match parse(spec, candidate.raw) {
            Ok(value) if first => {
                let Candidate { origin, location, .. } = candidate;
                winner = Some(Winner { value, origin, location });
            }
            Ok(_) => {}
            Err(message) => {
                problems.push(ConfigProblem { location: candidate.location, key: Some(spec.key.to_string()), message })
            }
        }
        first = false;
    }
    if !first {
        return winner;
    }

    let default = match spec.default {
        Some(text) => text.to_string(),
        None if spec.key == "instance_id" => default_instance_id(sources.env),
        None => return None,
    };
    match parse(spec, Raw::Text(&default)) {
        Ok(value) => {
            Some(Winner { value, origin: Origin::Default, location: format!("default `{}` = {default:?}", spec.key) })
        }
        Err(message) => {
            problems.push(ConfigProblem {
                location: format!("default `{}` = {default:?}", spec.key),
                key: Some(spec.key.to_string()),
                message: format!("built-in default rejected (a bug): {message}"),
            });
            None
        }
    }
}

/// The machine's name: `HOSTNAME` from `env` (the pod name in
/// Kubernetes), else the kernel's hostname, else `localhost`. The one
/// hostname lookup of the project (instance ids here, heartbeats in the
/// runtime).
pub fn hostname(env: &BTreeMap<String, String>) -> String {
    env.get("HOSTNAME")
        .cloned()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `<hostname>-<pid>`: unique per process on a machine, and readable in the
/// fleet view. Kubernetes sets HOSTNAME to the pod name.
fn default_instance_id(env: &BTreeMap<String, String>) -> String {
    let host = hostname(env);
    let host: String = host.chars().take(100).map(|c| if CharSet::Printable.allows(c) { c } else { '-' }).collect();
    format!("{host}-{}", std::process::id())
}

/// How a value is shown in an error location: secrets redacted, long
/// values cut.
fn shown(spec: &SettingSpec, raw: &Raw<'_>) -> String {
    if spec.secret {
        return Secret::REDACTED.to_string();
    }
    let text = match raw {
        Raw::Text(t) => (*t).to_string(),
        Raw::Json(v) => v.to_string(),
    };
    // A database URL may carry a password, even a malformed one.
    let text = if spec.kind == Kind::DatabaseUrl { crate::database::redact_url(&text) } else { text };
    const MAX: usize = 100;
    if text.chars().count() > MAX { format!("{}…", text.chars().take(MAX).collect::<String>()) } else { text }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses and checks one value against its setting; the error is the
/// message part of a [`ConfigProblem`].
fn parse(spec: &SettingSpec, raw: Raw<'_>) -> Result<Parsed, String> {
    match (spec.kind, raw) {
        (_, Raw::Text(text)) => parse_text(spec.kind, text),
        (Kind::Integer { min, max }, Raw::Json(v)) => match v.as_u64() {
            Some(n) => check_integer(n, min, max),
            None => Err(format!("expected an integer from {min} to {max}, found {}", json_type(v))),
        },
        (Kind::Duration { .. }, Raw::Json(Value::Number(n))) => match n.as_u64() {
            Some(seconds) => check_duration(spec.kind, Duration::from_secs(seconds)),
            None => Err("expected a duration such as \"30s\" or a whole number of seconds".into()),
        },
        (Kind::Bool, Raw::Json(v)) => match v {
            Value::Bool(b) => Ok(Parsed::Bool(*b)),
            other => Err(format!("expected true or false, found {}", json_type(other))),
        },
        (kind, Raw::Json(Value::String(text))) => parse_text(kind, text),
        (Kind::Duration { .. }, Raw::Json(other)) => {
            Err(format!("expected a duration such as \"30s\" or a whole number of seconds, found {}", json_type(other)))
        }
        (_, Raw::Json(other)) => Err(format!("expected a string, found {}", json_type(other))),
    }
}

fn parse_text(kind: Kind, text: &str) -> Result<Parsed, String> {
    match kind {
        Kind::Text { chars, min_len, max_len } => {
            let fits = (min_len..=max_len).contains(&text.len()) && text.chars().all(|c| chars.allows(c));
            if fits { Ok(Parsed::Text(text.to_string())) } else { Err(format!("expected {}", kind.describe())) }
        }
        Kind::Url => {
            let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
            match rest {
                Some(rest) if !rest.is_empty() && !text.chars().any(char::is_whitespace) => {
                    Ok(Parsed::Text(text.to_string()))
                }
                _ => Err("expected an http:// or https:// URL".to_string()),
            }
        }
        Kind::Region => {
            if is_region(text) {
                Ok(Parsed::Text(text.to_string()))
            } else {
                Err("expected an AWS region such as `us-east-1`".to_string())
            }
        }
        Kind::Path => Ok(Parsed::Text(text.to_string())),
        Kind::DatabaseUrl => DatabaseUrl::parse(text).map(Parsed::Database),
        Kind::SocketAddr => text.trim().parse().map(Parsed::Addr).map_err(|_| {
            "expected a socket address such as `127.0.0.1:8080` or `0.0.0.0:0` (port 0 picks a free port)".to_string()
        }),
        Kind::Choice(words) => words
            .iter()
            .find(|w| w.eq_ignore_ascii_case(text.trim()))
            .map(|w| Parsed::Text((*w).to_string()))
            .ok_or_else(|| format!("expected one of {}", words.join(", "))),
        Kind::Integer { min, max } => match text.trim().parse::<u64>() {
            Ok(n) => check_integer(n, min, max),
            Err(_) => Err(format!("expected an integer from {min} to {max}")),
        },
        Kind::Duration { .. } => match parse_duration(text) {
            Ok(d) => check_duration(kind, d),
            Err(DurationError::Overflow(_)) => Err("duration is too large".to_string()),
            Err(_) => Err("expected a duration such as `30s`, `5m` or `1m30s`".to_string()),
        },
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Parsed::Bool(true)),
            "false" | "0" => Ok(Parsed::Bool(false)),
            _ => Err("expected true, false, 1 or 0".to_string()),
        },
        Kind::Secret { min_bytes } => {
            if text.len() >= min_bytes {
                Ok(Parsed::Secret(Secret::new(text)))
            } else {
                Err(format!("must be at least {min_bytes} bytes"))
            }
        }
    }
}

fn check_integer(n: u64, min: u64, max: u64) -> Result<Parsed, String> {
    if (min..=max).contains(&n) { Ok(Parsed::Int(n)) } else { Err(format!("expected an integer from {min} to {max}")) }
}

fn check_duration(kind: Kind, d: Duration) -> Result<Parsed, String> {
    let Kind::Duration { min, max, whole_seconds } = kind else {
        return Err("not a duration setting (a bug)".to_string());
    };
    if d < min {
        Err(format!("must be at least {}", format_duration(min)))
    } else if d > max {
        Err(format!("must be at most {}", format_duration(max)))
    } else if whole_seconds && d.subsec_nanos() != 0 {
        Err("must be a whole number of seconds (SQS counts in seconds)".to_string())
    } else {
        Ok(Parsed::Duration(d))
    }
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`: a two-letter area, words,
/// and a number.
fn is_region(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [area, middle @ .., number] = parts.as_slice() else {
        return false;
    };
    area.len() == 2
        && area.chars().all(|c| c.is_ascii_lowercase())
        && !middle.is_empty()
        && middle.iter().all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
        && !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
}

/// Rules between settings. Skipped for a setting whose own value was bad,
/// so one mistake is reported once.
fn cross_check(winners: &BTreeMap<&'static str, Winner>, problems: &mut Vec<ConfigProblem>) {
    let bad: BTreeSet<String> = problems.iter().filter_map(|p| p.key.clone()).collect();
    let has_key = winners.contains_key("signing_key") || bad.contains("signing_key");
    let mut require = |key: &str, message: &str| {
        if let Some(w) = winners.get(key) {
            problems.push(ConfigProblem {
                location: w.location.clone(),
                key: Some(key.to_string()),
                message: message.to_string(),
            });
        }
    };
    if !has_key && matches!(winners.get("require_signature"), Some(Winner { value: Parsed::Bool(true), .. })) {
        require("require_signature", "needs a signing key: set SQSAGA_SIGNING_KEY (or `signing_key` in the file)");
    }
    let has_access_key =
        winners.contains_key("sqs_endpoint_access_key_id") || bad.contains("sqs_endpoint_access_key_id");
    if let Some(Winner { value: Parsed::Addr(addr), .. }) = winners.get("sqs_endpoint_addr")
        && !addr.ip().is_loopback()
        && !has_access_key
    {
        require(
            "sqs_endpoint_addr",
            "a non-loopback address opens the queues to the network: set SQSAGA_SQS_ENDPOINT_ACCESS_KEY_ID \
             (and SQSAGA_SQS_ENDPOINT_SECRET_ACCESS_KEY to verify signatures), or listen on 127.0.0.1",
        );
    }
    if !has_access_key && winners.contains_key("sqs_endpoint_secret_access_key") {
        require(
            "sqs_endpoint_secret_access_key",
            "a secret access key needs its key id: set SQSAGA_SQS_ENDPOINT_ACCESS_KEY_ID too",
        );
    }
    let has_admin_token =
        ["admin_token", "admin_token_file"].iter().any(|k| winners.contains_key(k) || bad.contains(*k));
    if let Some(Winner { value: Parsed::Addr(addr), .. }) = winners.get("admin_addr")
        && !addr.ip().is_loopback()
        && !has_admin_token
    {
        require(
            "admin_addr",
            "a non-loopback address opens the admin API to the network: set SQSAGA_ADMIN_TOKEN \
             (or SQSAGA_ADMIN_TOKEN_FILE), or listen on 127.0.0.1",
        );
    }
    if !has_key && winners.contains_key("signing_key_previous") {
        require(
            "signing_key_previous",
            "a previous key is only accepted during a rotation, next to the current one: \
             set SQSAGA_SIGNING_KEY (or `signing_key` in the file) too",
        );
    }
}

/// Typed settings from checked values. Called only when there were no
/// problems, so every setting with a default has a value; the fallbacks
/// below are unreachable placeholders, not policy.
fn build(winners: &BTreeMap<&'static str, Winner>, config_file: Option<PathBuf>) -> Settings {
    let get = |key: &str| winners.get(key).map(|w| &w.value);
    let text = |key: &str| match get(key) {
        Some(Parsed::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let int = |key: &str| match get(key) {
        Some(Parsed::Int(n)) => *n,
        _ => 0,
    };
    let duration = |key: &str| match get(key) {
        Some(Parsed::Duration(d)) => *d,
        _ => Duration::ZERO,
    };
    let secret = |key: &str| match get(key) {
        Some(Parsed::Secret(s)) => Some(s.clone()),
        _ => None,
    };
    let choice = |key: &str| text(key).unwrap_or_default();
    Settings {
        queue_url: text("queue_url"),
        dlq_url: text("dlq_url"),
        region: text("region"),
        log_level: LogLevel::from_name(&choice("log_level")).unwrap_or(LogLevel::Info),
        backend: Backend::from_name(&choice("backend")).unwrap_or(Backend::Embedded),
        data_dir: text("data_dir").map(PathBuf::from).unwrap_or_default(),
        http_addr: match get("http_addr") {
            Some(Parsed::Addr(a)) => *a,
            _ => SocketAddr::from(([127, 0, 0, 1], 8080)),
        },
        sqs_endpoint_addr: match get("sqs_endpoint_addr") {
            Some(Parsed::Addr(a)) => Some(*a),
            _ => None,
        },
        sqs_endpoint_access_key_id: text("sqs_endpoint_access_key_id"),
        sqs_endpoint_secret_access_key: secret("sqs_endpoint_secret_access_key"),
        admin_addr: match get("admin_addr") {
            Some(Parsed::Addr(a)) => Some(*a),
            _ => None,
        },
        admin_token: secret("admin_token"),
        admin_token_file: text("admin_token_file").map(PathBuf::from),
        admin_read_token: secret("admin_read_token"),
        admin_read_token_file: text("admin_read_token_file").map(PathBuf::from),
        service: text("service"),
        participant_db: match get("participant_db") {
            Some(Parsed::Database(d)) => Some(d.clone()),
            _ => None,
        },
        instance_id: text("instance_id").unwrap_or_default(),
        concurrency: usize::try_from(int("concurrency")).unwrap_or(1),
        visibility_timeout: duration("visibility_timeout"),
        wait_time: duration("wait_time"),
        drain_timeout: duration("drain_timeout"),
        orchestrator_queue_url: text("orchestrator_queue_url"),
        queue_prefix: text("queue_prefix").unwrap_or_default(),
        table: text("table").unwrap_or_default(),
        retention: duration("retention"),
        definitions: text("definitions").map(PathBuf::from),
        fleet_policy: text("fleet_policy").map(PathBuf::from),
        drift_mode: DriftMode::from_name(&choice("drift_mode")).unwrap_or(DriftMode::Observe),
        sqs_preset: SqsPreset::from_name(&choice("sqs_preset")).unwrap_or(SqsPreset::Cost),
        heartbeat_interval: duration("heartbeat_interval"),
        max_receive_count: u32::try_from(int("max_receive_count")).unwrap_or(1),
        max_in_flight: int("max_in_flight"),
        signing_key: secret("signing_key"),
        signing_key_previous: secret("signing_key_previous"),
        require_signature: matches!(get("require_signature"), Some(Parsed::Bool(true))),
        signature_max_age: duration("signature_max_age"),
        otlp_endpoint: text("otlp_endpoint"),
        endpoint_url: text("endpoint_url"),
        config_file,
        origins: winners.iter().map(|(k, w)| (*k, w.origin.clone())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_checks() {
        for spec in SETTINGS {
            if let Some(default) = spec.default {
                assert!(parse(spec, Raw::Text(default)).is_ok(), "{}", spec.key);
            }
        }
    }

    #[test]
    fn regions() {
        for ok in ["us-east-1", "us-gov-west-1", "cn-north-1", "eu-central-2"] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["", "us", "us-east", "US-EAST-1", "useast1", "us--1", "us-east-x"] {
            assert!(!is_region(bad), "{bad}");
        }
    }

    #[test]
    fn default_instance_id_is_host_and_pid() {
        let env = BTreeMap::from([("HOSTNAME".to_string(), "worker-7f9c".to_string())]);
        assert_eq!(default_instance_id(&env), format!("worker-7f9c-{}", std::process::id()));
    }
}
