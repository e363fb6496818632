//! `sqsaga lint-deploy PATH...`: checks that the deployment artifacts agree
//! with what this binary reads and serves.
//!
//! A PATH is a rendered manifest (multi-document YAML, `-` for stdin), a
//! Kustomize directory (rendered with `kubectl kustomize`, or `kustomize
//! build`), a Chef cookbook, or a `deploy/` root (its `k8s/base`, every
//! `k8s/overlays/*` and every `chef/cookbooks/*`).
//!
//! What is known comes from the code that parses and serves it, never from a
//! second list: environment variables, file keys and defaults from the
//! settings table (`sqsaga_config::SETTINGS`, checked with the real resolver,
//! `Settings::resolve`), HTTP paths from `sqsaga_http` (the constants its
//! router uses), subcommands and flags from this binary's clap parser, step
//! timeouts from the deployed saga definitions parsed by `sqsaga_core::yaml`.
//!
//! Manifest checks, on every container whose image (or command) is `sqsaga*`:
//! every variable set (`env`, and the keys of `envFrom` ConfigMaps and
//! Secrets) is one the binary knows, and their values pass its checks; the
//! arguments are a real subcommand with real flags, a worker has a service;
//! the binary listens on a non-loopback address whose port is the container
//! port named `metrics`, which the probes use, with `/readyz` for readiness
//! and `/healthz` for liveness; `terminationGracePeriodSeconds` exceeds the
//! longest step timeout of the definitions the orchestrator mounts plus the
//! drain budget. On every workload: no image without a tag or tagged
//! `latest`, no `replicas` on a Deployment that a KEDA ScaledObject (or an
//! HPA) scales.
//!
//! Chef checks, kept to what a static reading of a cookbook can establish:
//! the keys a `*.json.erb` template writes (literal JSON keys, or the keys of
//! the recipe's hash literal it serialises) are known file keys; a
//! `*.service.erb` unit's `ExecStart` parses as a subcommand with its flags;
//! its `TimeoutStopSec` (resolved through the recipe's `variables(...)`,
//! locals and `attributes/*.rb` with integer arithmetic) exceeds the drain
//! budget plus the longest step timeout.
//!
//! The checks are pure functions over parsed documents and file texts
//! ([`lint_manifests`], [`lint_cookbook`]); only [`run`] touches the disk
//! and runs kubectl.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser};
use sqsaga_config::{CONFIG_ENV, ENV_PREFIX, Kind, SETTINGS, SettingSpec, Settings, Sources, known_env_vars};
use sqsaga_core::duration::{format_duration, parse_duration};
use sqsaga_http::{HEALTHZ, METRICS, PATHS, READYZ};
use sqsaga_orchestrator::definitions::is_saga_file;
use yaml_rust2::{Yaml, YamlLoader};

/// Arguments of `sqsaga lint-deploy`.
#[derive(Debug, Clone, Args)]
pub struct LintArgs {
    /// Rendered manifests (multi-document YAML; `-` reads stdin), Kustomize
    /// directories (rendered with `kubectl kustomize`), Chef cookbooks, or a
    /// deploy/ root (k8s/base, every k8s/overlays/*, every chef/cookbooks/*).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// How bad a finding is: any error fails the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The deployment would misbehave: exit 1.
    Error,
    /// Something could not be checked, or is odd but harmless.
    Warning,
}

/// One problem, naming the file and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file (or rendered directory) it is in.
    pub file: String,
    /// The object and field, e.g.
    /// `Deployment/sqsaga-inventory spec.template.spec.containers[0].env[3].name`.
    pub path: String,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what the binary expects.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}: {}", self.file, self.path, self.message),
            Severity::Warning => write!(f, "{}: {}: warning: {}", self.file, self.path, self.message),
        }
    }
}

/// Findings of one file, without duplicates (a ConfigMap loaded by several
/// containers is reported once).
struct Report {
    file: String,
    findings: Vec<Finding>,
    seen: BTreeSet<(String, String)>,
}

impl Report {
    fn new(file: &str) -> Report {
        Report { file: file.to_string(), findings: Vec::new(), seen: BTreeSet::new() }
    }

    fn push(&mut self, severity: Severity, path: String, message: String) {
        let file = self.file.clone();
        self.push_in(file, severity, path, message);
    }

    /// A finding in another file than the report's (a cookbook's templates).
    fn push_in(&mut self, file: String, severity: Severity, path: String, message: String) {
        if self.seen.insert((format!("{file}\0{path}"), message.clone())) {
            self.findings.push(Finding { file, path, severity, message });
        }
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path.into(), message.into());
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path.into(), message.into());
    }
}

/// The longest step timeout of the deployed definitions, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongestStep {
    /// The timeout.
    pub timeout: Duration,
    /// Step, saga and source, for messages.
    pub source: String,
}

impl LongestStep {
    fn max(a: Option<LongestStep>, b: Option<LongestStep>) -> Option<LongestStep> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.timeout > a.timeout { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// What [`lint_manifests`] found.
#[derive(Debug, Clone)]
pub struct ManifestLint {
    /// Problems, in the order found.
    pub findings: Vec<Finding>,
    /// The longest step timeout of the definitions the render deploys, for
    /// the Chef unit's stop budget.
    pub longest_step: Option<LongestStep>,
    /// Workloads running the sqsaga binary.
    pub workloads: usize,
}

// ---------------------------------------------------------------------------
// YAML helpers

fn text(y: &Yaml) -> Option<&str> {
    y.as_str()
}

/// A scalar as Kubernetes would see it in a string field.
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn items(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn entries(y: &Yaml) -> Vec<(String, &Yaml)> {
    y.as_hash().map(|h| h.iter().filter_map(|(k, v)| Some((scalar(k)?, v))).collect()).unwrap_or_default()
}

fn present(y: &Yaml) -> bool {
    !y.is_badvalue() && !y.is_null()
}

/// One Kubernetes object of a render.
struct Obj<'a> {
    kind: &'a str,
    name: &'a str,
    namespace: &'a str,
    doc: &'a Yaml,
}

impl Obj<'_> {
    fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    fn at(&self, field: &str) -> String {
        format!("{} {field}", self.id())
    }
}

fn objects(docs: &[Yaml]) -> Vec<Obj<'_>> {
    let mut out = Vec::new();
    for doc in docs {
        let kind = text(&doc["kind"]).unwrap_or("");
        if kind.ends_with("List") && present(&doc["items"]) {
            out.extend(objects(items(&doc["items"])));
            continue;
        }
        if kind.is_empty() {
            continue;
        }
        let name = text(&doc["metadata"]["name"]).unwrap_or("<unnamed>");
        let namespace = text(&doc["metadata"]["namespace"]).unwrap_or("");
        out.push(Obj { kind, name, namespace, doc });
    }
    out
}

fn find<'o, 'a>(objs: &'o [Obj<'a>], kind: &str, name: &str, namespace: &str) -> Option<&'o Obj<'a>> {
    objs.iter().find(|o| {
        o.kind == kind && o.name == name && (o.namespace.is_empty() || namespace.is_empty() || o.namespace == namespace)
    })
}

/// The pod spec of a workload and its field path.
fn pod_spec<'a>(obj: &Obj<'a>) -> Option<(&'a Yaml, &'static str)> {
    let (spec, path) = match obj.kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            (&obj.doc["spec"]["template"]["spec"], "spec.template.spec")
        }
        "CronJob" => {
            (&obj.doc["spec"]["jobTemplate"]["spec"]["template"]["spec"], "spec.jobTemplate.spec.template.spec")
        }
        "Pod" => (&obj.doc["spec"], "spec"),
        _ => return None,
    };
    spec.is_hash().then_some((spec, path))
}

/// One container of a workload.
struct Container<'a> {
    obj: usize,
    id: String,
    namespace: &'a str,
    pod: &'a Yaml,
    pod_path: &'static str,
    /// `spec.template.spec.containers[0]`
    base: String,
    /// An init container (only its image is checked: it runs to completion first).
    init: bool,
    y: &'a Yaml,
}

impl Container<'_> {
    fn at(&self, field: &str) -> String {
        if field.is_empty() {
            format!("{} {}", self.id, self.base)
        } else {
            format!("{} {}.{field}", self.id, self.base)
        }
    }

    fn name(&self) -> &str {
        text(&self.y["name"]).unwrap_or("?")
    }

    /// Whether it runs this binary: image `…/sqsaga*` or command `…/sqsaga*`.
    fn is_sqsaga(&self) -> bool {
        let image = text(&self.y["image"]).map(image_repository).unwrap_or("");
        let command = items(&self.y["command"]).first().and_then(text).unwrap_or("");
        basename(image).starts_with("sqsaga") || basename(command).starts_with("sqsaga")
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn containers<'a>(objs: &[Obj<'a>]) -> Vec<Container<'a>> {
    let mut out = Vec::new();
    for (i, obj) in objs.iter().enumerate() {
        let Some((pod, pod_path)) = pod_spec(obj) else { continue };
        for list in ["initContainers", "containers"] {
            for (n, y) in items(&pod[list]).iter().enumerate() {
                out.push(Container {
                    obj: i,
                    id: obj.id(),
                    namespace: obj.namespace,
                    pod,
                    pod_path,
                    base: format!("{pod_path}.{list}[{n}]"),
                    init: list == "initContainers",
                    y,
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Manifests

/// Checks the objects of one render (or manifest file) named `file`.
pub fn lint_manifests(file: &str, docs: &[Yaml]) -> ManifestLint {
    let mut r = Report::new(file);
    let objs = objects(docs);
    let all = containers(&objs);

    for c in &all {
        check_image(c, &mut r);
    }
    check_scaling(&objs, &mut r);
    check_services(&objs, &mut r);

    let analysed: Vec<Analysed> = all
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.init && c.is_sqsaga())
        .map(|(i, c)| analyse(&objs, i, c, &mut r))
        .collect();
    let longest = deployed_definitions(&objs, &all, &analysed, &mut r);
    check_grace_periods(&objs, &all, &analysed, longest.as_ref(), &mut r);

    let workloads = analysed.iter().map(|a| all[a.container].obj).collect::<BTreeSet<_>>().len();
    ManifestLint { findings: r.findings, longest_step: longest, workloads }
}

/// The repository part of an image reference (no tag, no digest).
fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// Why an image reference is not pinned, if it is not: no tag pulls the
/// implicit `latest`, and `latest` moves.
pub fn image_problem(image: &str) -> Option<String> {
    if image.contains('@') {
        return None; // pinned by digest
    }
    let last = basename(image);
    match last.split_once(':') {
        None => Some(format!("image `{image}` has no tag, so it pulls the implicit `latest`: pin a version")),
        Some((_, "latest")) => {
            Some(format!("image `{image}` is tagged `latest`, which moves under you: pin a version"))
        }
        Some((_, "")) => Some(format!("image `{image}` has an empty tag")),
        Some(_) => None,
    }
}

fn check_image(c: &Container<'_>, r: &mut Report) {
    match text(&c.y["image"]) {
        Some(image) => {
            if let Some(problem) = image_problem(image) {
                r.error(c.at("image"), problem);
            }
        }
        None => r.error(c.at("image"), format!("container `{}` has no image", c.name())),
    }
}

/// No fixed `replicas` on what an autoscaler scales: Flux (or `kubectl
/// apply`) would reset the autoscaler's count on every reconciliation.
fn check_scaling(objs: &[Obj<'_>], r: &mut Report) {
    for scaler in objs.iter().filter(|o| matches!(o.kind, "ScaledObject" | "HorizontalPodAutoscaler")) {
        let target = &scaler.doc["spec"]["scaleTargetRef"];
        let Some(name) = text(&target["name"]) else {
            r.error(scaler.at("spec.scaleTargetRef.name"), "no scale target");
            continue;
        };
        let kind = text(&target["kind"]).unwrap_or("Deployment");
        let Some(workload) = find(objs, kind, name, scaler.namespace) else {
            r.warn(scaler.at("spec.scaleTargetRef.name"), format!("scales {kind}/{name}, which is not in this render"));
            continue;
        };
        let replicas = &workload.doc["spec"]["replicas"];
        if present(replicas) {
            let n = scalar(replicas).unwrap_or_else(|| "?".into());
            r.error(
                workload.at("spec.replicas"),
                format!(
                    "fixed `replicas: {n}` on a {kind} that {} scales: every reconciliation (Flux, kubectl apply) \
                     resets the autoscaler's replica count; remove `replicas`",
                    scaler.id()
                ),
            );
        }
    }
}

/// A Prometheus scrape annotation must name the path the binary serves.
fn check_services(objs: &[Obj<'_>], r: &mut Report) {
    for svc in objs.iter().filter(|o| o.kind == "Service") {
        let annotations = &svc.doc["metadata"]["annotations"];
        if let Some(path) = text(&annotations["prometheus.io/path"]) {
            let selects_sqsaga = entries(&svc.doc["spec"]["selector"]).iter().any(|(_, v)| text(v) == Some("sqsaga"));
            if selects_sqsaga && path != METRICS {
                r.error(
                    svc.at("metadata.annotations.prometheus.io/path"),
                    format!("`{path}` is not where the binary serves metrics ({METRICS})"),
                );
            }
        }
    }
}

/// Where a variable's value comes from.
#[derive(Debug, Clone)]
enum EnvValue {
    /// Written in the manifest (or a ConfigMap in the render).
    Literal(String),
    /// Only known in the cluster: a Secret, the downward API, a ConfigMap
    /// outside the render.
    Runtime,
}

/// One variable set in a container.
struct EnvEntry {
    name: String,
    value: EnvValue,
    /// Where the name is written (a finding path).
    at: String,
    /// The container's `envFrom[i]`, when loaded from a ConfigMap or Secret.
    via: Option<String>,
}

fn container_env(objs: &[Obj<'_>], c: &Container<'_>, r: &mut Report) -> Vec<EnvEntry> {
    let mut out = Vec::new();
    for (i, source) in items(&c.y["envFrom"]).iter().enumerate() {
        let prefix = text(&source["prefix"]).unwrap_or("");
        let via = c.at(&format!("envFrom[{i}]"));
        let (kind, reference) = if present(&source["configMapRef"]) {
            ("ConfigMap", &source["configMapRef"])
        } else if present(&source["secretRef"]) {
            ("Secret", &source["secretRef"])
        } else {
            r.warn(via, "envFrom entry with neither configMapRef nor secretRef: not checked");
            continue;
        };
        let Some(name) = text(&reference["name"]) else {
            r.error(via, format!("{kind} reference without a name"));
            continue;
        };
        let Some(obj) = find(objs, kind, name, c.namespace) else {
            if reference["optional"].as_bool() != Some(true) {
                r.warn(via, format!("{kind}/{name} is not in this render: the variables it sets are not checked"));
            }
            continue;
        };
        let sections: &[&str] = if kind == "ConfigMap" { &["data"] } else { &["data", "stringData"] };
        for section in sections {
            for (key, value) in entries(&obj.doc[*section]) {
                let value = match (kind, scalar(value)) {
                    ("ConfigMap", Some(v)) => EnvValue::Literal(v),
                    _ => EnvValue::Runtime,
                };
                out.push(EnvEntry {
                    name: format!("{prefix}{key}"),
                    value,
                    at: obj.at(&format!("{section}.{key}")),
                    via: Some(via.clone()),
                });
            }
        }
    }
    for (i, e) in items(&c.y["env"]).iter().enumerate() {
        let Some(name) = text(&e["name"]) else {
            r.error(c.at(&format!("env[{i}]")), "env entry without a name");
            continue;
        };
        let from = &e["valueFrom"];
        let value = if let Some(v) = scalar(&e["value"]) {
            EnvValue::Literal(v)
        } else if present(&from["configMapKeyRef"]) {
            let cm = text(&from["configMapKeyRef"]["name"]).and_then(|n| find(objs, "ConfigMap", n, c.namespace));
            let key = text(&from["configMapKeyRef"]["key"]).unwrap_or("");
            match cm.and_then(|cm| scalar(&cm.doc["data"][key])) {
                Some(v) => EnvValue::Literal(v),
                None => EnvValue::Runtime,
            }
        } else if present(from) {
            EnvValue::Runtime
        } else {
            EnvValue::Literal(String::new())
        };
        out.push(EnvEntry { name: name.to_string(), value, at: c.at(&format!("env[{i}].name")), via: None });
    }
    out
}

/// The setting a variable sets, if any.
fn setting_of(env: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.env == env || s.env_fallbacks.contains(&env))
}

/// "unknown variable" with a hint: the variable of the setting whose key the
/// name spells (`SQSAGA_QUEUE_URL` → `SQS_QUEUE_URL`), else a close name.
fn unknown_env_message(name: &str, known: &[&'static str]) -> String {
    let by_key = name
        .strip_prefix(ENV_PREFIX)
        .and_then(|rest| sqsaga_config::spec(&rest.to_ascii_lowercase()))
        .map(|s| s.env)
        .filter(|env| *env != name);
    let hint = by_key.or_else(|| sqsaga_config::suggest(name, known.iter().copied()));
    let hint = hint.map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default();
    format!(
        "unknown environment variable `{name}`{hint}: the sqsaga binary does not read it, so whatever it was meant \
         to set stays at its default (known variables: the env column of crates/config/src/spec.rs)"
    )
}

/// What a sqsaga container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Orchestrator,
    Worker,
    /// Another subcommand (named).
    Other(String),
    /// Arguments not checked (a wrapper command) or not parsed.
    Unknown,
}

/// The parsed command line of a container or unit.
struct Invocation {
    role: Role,
    /// Flag values by canonical setting key (`service`, `data_dir`).
    flags: BTreeMap<&'static str, String>,
    /// `--config PATH`, whose content lint-deploy cannot see.
    config: Option<PathBuf>,
}

/// Parses `args` (after the program name) with this binary's own parser.
fn parse_invocation(args: &[String]) -> Result<Invocation, String> {
    let argv = std::iter::once("sqsaga".to_string()).chain(args.iter().cloned());
    let cli = crate::Cli::try_parse_from(argv).map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            return "it prints help or the version and exits".to_string();
        }
        // clap's first line, plus its "did you mean" tip.
        let rendered = e.to_string();
        let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or("");
        let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
        if let Some(tip) = lines.find(|l| l.starts_with("tip:")) {
            message.push_str(&format!(" ({tip})"));
        }
        message
    })?;
    let mut flags = BTreeMap::new();
    let (role, config) = match cli.command {
        crate::Command::Orchestrator(a) => {
            if let Some(dir) = &a.config.data_dir {
                flags.insert("data_dir", dir.display().to_string());
            }
            (Role::Orchestrator, a.config.config)
        }
        crate::Command::Worker(a) => {
            if let Some(dir) = &a.config.data_dir {
                flags.insert("data_dir", dir.display().to_string());
            }
            if let Some(service) = a.service {
                flags.insert("service", service);
            }
            (Role::Worker, a.config.config)
        }
        _ => (Role::Other(args.first().cloned().unwrap_or_default()), None),
    };
    Ok(Invocation { role, flags, config })
}

fn strings(y: &Yaml) -> Vec<String> {
    items(y).iter().filter_map(scalar).collect()
}

fn check_args(c: &Container<'_>, r: &mut Report) -> Invocation {
    let unknown = Invocation { role: Role::Unknown, flags: BTreeMap::new(), config: None };
    let command = strings(&c.y["command"]);
    let args = strings(&c.y["args"]);
    let argv: Vec<String> = match command.split_first() {
        None => args, // the image's ENTRYPOINT is the binary
        Some((program, rest)) if basename(program).starts_with("sqsaga") => rest.iter().chain(&args).cloned().collect(),
        Some((program, _)) => {
            r.warn(c.at("command"), format!("runs `{program}`, not the sqsaga binary: its arguments are not checked"));
            return unknown;
        }
    };
    let at = if present(&c.y["args"]) { c.at("args") } else { c.at("command") };
    match parse_invocation(&argv) {
        Ok(inv) => {
            if let Role::Other(name) = &inv.role {
                r.warn(at, format!("runs `sqsaga {name}`, which is neither `orchestrator` nor `worker`"));
            }
            inv
        }
        Err(message) => {
            r.error(at, format!("`sqsaga {}` is not a command line this binary accepts: {message}", argv.join(" ")));
            unknown
        }
    }
}

/// The long-running roles, which listen for probes and drain on SIGTERM.
fn serves(role: &Role) -> bool {
    matches!(role, Role::Orchestrator | Role::Worker)
}

/// What one sqsaga container turned out to run with.
struct Analysed {
    container: usize,
    role: Role,
    drain: Duration,
    drain_source: String,
    definitions: Option<String>,
}

fn analyse(objs: &[Obj<'_>], container: usize, c: &Container<'_>, r: &mut Report) -> Analysed {
    let env = container_env(objs, c, r);
    let known = known_env_vars();

    for e in &env {
        if !known.contains(&e.name.as_str()) {
            let mut message = unknown_env_message(&e.name, &known);
            if let Some(via) = &e.via {
                message.push_str(&format!("; loaded by {via}"));
            }
            r.error(e.at.clone(), message);
        }
    }

    // The effective environment: env overrides envFrom, later overrides earlier.
    let mut effective: BTreeMap<&str, &EnvEntry> = BTreeMap::new();
    for e in &env {
        effective.insert(e.name.as_str(), e);
    }

    let inv = check_args(c, r);
    let reads_file = inv.config.is_some() || effective.contains_key(CONFIG_ENV);
    if reads_file {
        r.warn(
            c.at(""),
            "reads a config file, whose content lint-deploy cannot see: settings are checked from the environment, \
             flags and defaults only",
        );
    }

    // The binary's own resolver over what the manifest sets. Values known only
    // in the cluster get a stand-in that passes (secrets, the pod name), so
    // cross-checks such as "require_signature needs a signing key" still run.
    let mut map = BTreeMap::new();
    for (name, e) in &effective {
        let Some(spec) = setting_of(name) else { continue };
        let value = match (&e.value, spec.kind) {
            (EnvValue::Literal(v), _) => v.clone(),
            (EnvValue::Runtime, Kind::Secret { min_bytes }) => "x".repeat(min_bytes.max(64)),
            (EnvValue::Runtime, _) if spec.per_instance => "runtime-value".to_string(),
            (EnvValue::Runtime, _) => continue,
        };
        map.insert((*name).to_string(), value);
    }
    let mut sources = Sources::new(&map);
    for (key, value) in &inv.flags {
        sources = sources.with_flag(key, value.clone());
    }
    let args_at = if present(&c.y["args"]) { c.at("args") } else { c.at("") };
    let settings = match Settings::resolve(&sources) {
        Ok(settings) => Some(settings),
        Err(errors) => {
            for p in &errors.0 {
                let at = if p.location.starts_with("--") {
                    args_at.clone()
                } else {
                    p.key
                        .as_deref()
                        .and_then(sqsaga_config::spec)
                        .and_then(|s| {
                            std::iter::once(&s.env)
                                .chain(s.env_fallbacks)
                                .find_map(|n| effective.get(n))
                                .map(|e| e.at.clone())
                        })
                        .unwrap_or_else(|| c.at(""))
                };
                r.error(at, format!("{}: {}", p.location, p.message));
            }
            None
        }
    };

    // Values the later checks need even when another setting was bad; a
    // default is no answer when a config file may set the value instead.
    let literal = |key: &str| -> Option<(String, String)> {
        let spec = sqsaga_config::spec(key)?;
        for name in std::iter::once(&spec.env).chain(spec.env_fallbacks) {
            if let Some(EnvEntry { value: EnvValue::Literal(v), at, .. }) = effective.get(name).copied()
                && !v.is_empty()
            {
                return Some((v.clone(), format!("{name}={v} at {at}")));
            }
        }
        if reads_file {
            return None;
        }
        spec.default.map(|d| (d.to_string(), format!("default of `{key}`")))
    };
    let listen = match &settings {
        Some(s) => literal("http_addr").map(|(_, from)| (s.http_addr, from)),
        None => literal("http_addr").and_then(|(v, from)| v.trim().parse::<SocketAddr>().ok().map(|a| (a, from))),
    };
    let definitions = match &settings {
        Some(s) => s.definitions.as_ref().map(|p| p.display().to_string()),
        None => literal("definitions").map(|(v, _)| v),
    };
    let (drain, drain_source) = match (&settings, literal("drain_timeout")) {
        (Some(s), Some((_, from))) => (s.drain_timeout, from),
        (None, Some((v, from))) => (parse_duration(&v).unwrap_or_default(), from),
        (_, None) => (Duration::ZERO, "unset".to_string()),
    };

    if inv.role == Role::Worker {
        check_worker_service(c, &inv, settings.as_ref(), &effective, r);
    }
    if serves(&inv.role) {
        check_http(c, listen, r);
    }

    Analysed { container, role: inv.role, drain, drain_source, definitions }
}

fn check_worker_service(
    c: &Container<'_>,
    inv: &Invocation,
    settings: Option<&Settings>,
    effective: &BTreeMap<&str, &EnvEntry>,
    r: &mut Report,
) {
    let at = if present(&c.y["args"]) { c.at("args") } else { c.at("") };
    let service = settings.and_then(|s| s.service.clone()).or_else(|| inv.flags.get("service").cloned());
    let Some(service) = service else {
        if settings.is_some() {
            r.error(at, "a worker needs its service: pass `--service NAME` or set SQSAGA_SERVICE");
        }
        return;
    };
    if !crate::demo::SERVICES.contains(&service.as_str()) {
        r.error(
            at.clone(),
            format!("service `{service}`: this binary implements {}", crate::demo::SERVICES.join(", ")),
        );
    }
    if let (Some(flag), Some(EnvEntry { value: EnvValue::Literal(env), at: env_at, .. })) =
        (inv.flags.get("service"), effective.get("SQSAGA_SERVICE").copied())
        && !env.is_empty()
        && env != flag
    {
        r.warn(
            env_at.clone(),
            format!("SQSAGA_SERVICE={env} disagrees with `--service {flag}` in the arguments (the flag wins)"),
        );
    }
}

/// The container port named `metrics` is where the binary listens, and the
/// probes ask for paths it serves on that port. `listen` is `None` when the
/// manifest does not say (a config file may).
fn check_http(c: &Container<'_>, listen: Option<(SocketAddr, String)>, r: &mut Report) {
    let ports: Vec<(Option<String>, Option<i64>, usize)> = items(&c.y["ports"])
        .iter()
        .enumerate()
        .map(|(i, p)| (text(&p["name"]).map(str::to_string), p["containerPort"].as_i64(), i))
        .collect();
    // The port probes must use, when known, and where that comes from.
    let mut expected_port: Option<(u16, String)> = None;
    // A probe on the named port inherits a wrong declaration: reported once.
    let mut metrics_ok = false;
    if let Some((addr, from)) = listen {
        let port = addr.port();
        if addr.ip().is_loopback() {
            r.error(
                c.at(""),
                format!(
                    "the binary listens on {addr} ({from}): the kubelet's probes and Prometheus cannot reach a \
                     loopback address; set SQSAGA_HTTP_ADDR=0.0.0.0:{}",
                    if port == 0 { 8080 } else { port }
                ),
            );
        }
        if port == 0 {
            r.error(c.at(""), format!("the binary listens on a random port ({addr}, {from}): probes need a fixed one"));
        } else {
            match ports.iter().find(|(name, _, _)| name.as_deref() == Some("metrics")) {
                None => r.error(
                    c.at("ports"),
                    format!(
                        "no container port named `metrics`: declare containerPort {port} (where the binary \
                         listens, {from})"
                    ),
                ),
                Some((_, number, i)) if *number != Some(i64::from(port)) => r.error(
                    c.at(&format!("ports[{i}].containerPort")),
                    format!(
                        "port `metrics` is {}, but the binary listens on {port} ({from})",
                        number.map(|n| n.to_string()).unwrap_or_else(|| "unset".into())
                    ),
                ),
                Some(_) => metrics_ok = true,
            }
            expected_port = Some((port, from));
        }
    }

    for (probe, expected, why) in [
        ("readinessProbe", READYZ, "readiness must follow /readyz, which fails while draining or drifted"),
        ("livenessProbe", HEALTHZ, "liveness must follow /healthz, which fails only when a loop is stuck"),
        ("startupProbe", HEALTHZ, "a startup probe waits for /healthz"),
    ] {
        let p = &c.y[probe];
        if !present(p) {
            if probe != "startupProbe" {
                r.warn(c.at(probe), format!("no {probe}: the binary serves {expected} for it"));
            }
            continue;
        }
        if present(&p["httpGet"]) {
            let get = &p["httpGet"];
            let path_at = c.at(&format!("{probe}.httpGet.path"));
            let path = text(&get["path"]).unwrap_or("/");
            let bare = path.split('?').next().unwrap_or(path);
            if !PATHS.contains(&bare) {
                r.error(
                    path_at,
                    format!("probe path `{path}` is not served by the binary (it serves {}); {why}", PATHS.join(", ")),
                );
            } else if bare != expected {
                r.error(path_at, format!("probe path `{path}` is the wrong endpoint: {why}"));
            }
            if let Some(scheme) = text(&get["scheme"])
                && !scheme.eq_ignore_ascii_case("HTTP")
            {
                r.error(c.at(&format!("{probe}.httpGet.scheme")), format!("`{scheme}`: the binary serves plain HTTP"));
            }
            if let Some((port, from)) = &expected_port
                && (metrics_ok || text(&get["port"]) != Some("metrics"))
            {
                check_probe_port(c, &format!("{probe}.httpGet.port"), &get["port"], &ports, *port, from, r);
            }
        } else if present(&p["tcpSocket"]) {
            if let Some((port, from)) = &expected_port {
                let field = format!("{probe}.tcpSocket.port");
                check_probe_port(c, &field, &p["tcpSocket"]["port"], &ports, *port, from, r);
            }
            r.warn(c.at(probe), format!("a TCP probe only sees the port open; the binary serves {expected}"));
        } else if present(&p["grpc"]) {
            r.error(
                c.at(&format!("{probe}.grpc")),
                format!("the binary serves no gRPC health check: use httpGet {expected}"),
            );
        } else {
            r.warn(c.at(probe), format!("not an HTTP probe: not checked (the binary serves {expected})"));
        }
    }
}

fn check_probe_port(
    c: &Container<'_>,
    field: &str,
    value: &Yaml,
    ports: &[(Option<String>, Option<i64>, usize)],
    listen: u16,
    from: &str,
    r: &mut Report,
) {
    let at = c.at(field);
    let number = match value {
        Yaml::Integer(n) => Some(*n),
        Yaml::String(name) => match name.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => match ports.iter().find(|(n, _, _)| n.as_deref() == Some(name.as_str())) {
                Some((_, number, _)) => *number,
                None => {
                    r.error(at, format!("no container port named `{name}`"));
                    return;
                }
            },
        },
        _ => {
            r.error(at, "probe without a port");
            return;
        }
    };
    if number != Some(i64::from(listen)) {
        let shown = number.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        r.error(at, format!("probes port {shown}, but the binary listens on {listen} ({from})"));
    } else if text(value) != Some("metrics") && ports.iter().any(|(n, _, _)| n.as_deref() == Some("metrics")) {
        r.warn(at, "use the named port `metrics`, so the probe follows the port declaration");
    }
}

/// The saga definitions the orchestrators load: the ConfigMap files mounted
/// where SQSAGA_DEFINITIONS points, or the built-in order saga when unset.
fn deployed_definitions(
    objs: &[Obj<'_>],
    all: &[Container<'_>],
    analysed: &[Analysed],
    r: &mut Report,
) -> Option<LongestStep> {
    let mut longest = None;
    for a in analysed {
        let c = &all[a.container];
        let Some(path) = &a.definitions else {
            if a.role == Role::Orchestrator {
                let found = longest_of(crate::demo::ORDER_SAGA, "the built-in order saga (SQSAGA_DEFINITIONS unset)");
                longest = LongestStep::max(longest, found.ok().flatten());
            }
            continue;
        };
        match mounted_files(objs, c, path) {
            Ok(files) => {
                if files.is_empty() {
                    r.error(
                        c.at("volumeMounts"),
                        format!("SQSAGA_DEFINITIONS={path}, but no saga definition is mounted there"),
                    );
                }
                for (source, at, text) in files {
                    match longest_of(&text, &source) {
                        Ok(found) => longest = LongestStep::max(longest, found),
                        Err(problems) => r.error(at, format!("saga definitions do not parse: {problems}")),
                    }
                }
            }
            Err(why) => r.warn(c.at("volumeMounts"), format!("SQSAGA_DEFINITIONS={path}: {why}")),
        }
    }
    longest
}

fn longest_of(text: &str, source: &str) -> Result<Option<LongestStep>, String> {
    let defs = sqsaga_core::yaml::parse_definitions(text)
        .map_err(|p| sqsaga_core::yaml::format_problems(source, &p).replace('\n', "; "))?;
    Ok(defs
        .iter()
        .filter_map(|d| {
            let timeout = d.longest_step_timeout();
            let step = d.steps.iter().find(|s| s.timeout == timeout)?;
            Some(LongestStep {
                timeout,
                source: format!("step `{}` of saga `{}` v{} in {source}", step.name, d.name, d.version),
            })
        })
        .max_by_key(|l| l.timeout))
}

/// (source, finding path, text) of each definition file a container sees at `path`.
fn mounted_files(objs: &[Obj<'_>], c: &Container<'_>, path: &str) -> Result<Vec<(String, String, String)>, String> {
    let path = path.trim_end_matches('/');
    for mount in items(&c.y["volumeMounts"]) {
        let Some(mount_path) = text(&mount["mountPath"]).map(|m| m.trim_end_matches('/')) else { continue };
        let rel = if path == mount_path {
            ""
        } else if let Some(rest) = path.strip_prefix(mount_path).and_then(|r| r.strip_prefix('/')) {
            rest
        } else {
            continue;
        };
        let volume_name = text(&mount["name"]).unwrap_or("");
        let Some(volume) = items(&c.pod["volumes"]).iter().find(|v| text(&v["name"]) == Some(volume_name)) else {
            return Err(format!("volume `{volume_name}` is not declared"));
        };
        let Some(cm_name) = text(&volume["configMap"]["name"]) else {
            return Err(format!("volume `{volume_name}` is not a ConfigMap: its definitions cannot be checked"));
        };
        let Some(cm) = find(objs, "ConfigMap", cm_name, c.namespace) else {
            return Err(format!("ConfigMap/{cm_name} is not in this render"));
        };
        // File name in the mount → key in the ConfigMap.
        let mut files: Vec<(String, String)> = if present(&volume["configMap"]["items"]) {
            items(&volume["configMap"]["items"])
                .iter()
                .filter_map(|i| Some((text(&i["path"])?.to_string(), text(&i["key"])?.to_string())))
                .collect()
        } else {
            entries(&cm.doc["data"]).into_iter().map(|(k, _)| (k.clone(), k)).collect()
        };
        let sub_path = text(&mount["subPath"]);
        if let Some(sub) = sub_path {
            files.retain(|(file, _)| file == sub);
            files = files.into_iter().map(|(_, key)| (String::new(), key)).collect();
        }
        let selected: Vec<(String, String)> = match (rel, sub_path) {
            ("", Some(_)) => files,
            ("", None) => files.into_iter().filter(|(file, _)| is_saga_file(Path::new(file))).collect(),
            (name, None) => files.into_iter().filter(|(file, _)| file == name).collect(),
            (_, Some(_)) => return Err("points inside a subPath mount".into()),
        };
        return Ok(selected
            .into_iter()
            .filter_map(|(_, key)| {
                let text = scalar(&cm.doc["data"][key.as_str()])?;
                Some((format!("ConfigMap/{cm_name} data.{key}"), cm.at(&format!("data.{key}")), text))
            })
            .collect());
    }
    Err("no volume is mounted there".into())
}

/// Kubernetes' default grace period.
const DEFAULT_GRACE_SECONDS: i64 = 30;

fn check_grace_periods(
    objs: &[Obj<'_>],
    all: &[Container<'_>],
    analysed: &[Analysed],
    longest: Option<&LongestStep>,
    r: &mut Report,
) {
    let mut pods: BTreeMap<usize, Vec<&Analysed>> = BTreeMap::new();
    for a in analysed {
        if serves(&a.role) {
            pods.entry(all[a.container].obj).or_default().push(a);
        }
    }
    for (obj, members) in pods {
        let Some(a) = members.iter().max_by_key(|a| a.drain) else { continue };
        let c = &all[a.container];
        let field = format!("{}.terminationGracePeriodSeconds", c.pod_path);
        let value = &c.pod["terminationGracePeriodSeconds"];
        let (grace, shown) = match value {
            Yaml::Integer(n) => (*n, format!("{n}s")),
            v if !present(v) => {
                (DEFAULT_GRACE_SECONDS, format!("unset (Kubernetes' default {DEFAULT_GRACE_SECONDS}s)"))
            }
            _ => {
                r.error(objs[obj].at(&field), "not an integer number of seconds");
                continue;
            }
        };
        if let Some(problem) = grace_problem(grace, a.drain, &a.drain_source, longest) {
            r.error(objs[obj].at(&field), format!("{shown}: {problem}"));
        }
    }
}

/// Why a stop budget of `grace` seconds is too short for a drain of `drain`
/// after the longest step, if it is.
pub fn grace_problem(grace: i64, drain: Duration, drain_source: &str, longest: Option<&LongestStep>) -> Option<String> {
    let step = longest.map(|l| l.timeout).unwrap_or_default();
    let need = drain + step;
    if i128::from(grace) * 1000 > need.as_millis() as i128 {
        return None;
    }
    let step_part = match longest {
        Some(l) => format!("the longest step timeout {} ({}) + ", format_duration(l.timeout), l.source),
        None => "(no saga definitions found, so no step timeout) ".to_string(),
    };
    Some(format!(
        "must exceed {step_part}the drain budget {} ({drain_source}) = {}, or the process is killed mid-step",
        format_duration(drain),
        format_duration(need)
    ))
}

// ---------------------------------------------------------------------------
// Chef

/// The texts of a cookbook, by path relative to the cookbook.
#[derive(Debug, Clone, Default)]
pub struct Cookbook {
    /// How findings name the cookbook directory.
    pub dir: String,
    /// `recipes/*.rb`.
    pub recipes: Vec<(String, String)>,
    /// `attributes/*.rb`.
    pub attributes: Vec<(String, String)>,
    /// `templates/**/*.erb`.
    pub templates: Vec<(String, String)>,
}

/// Ruby source without its trailing comment (`#` outside a string).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, ch) in line.char_indices() {
        match (quote, ch) {
            (_, _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(ch),
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Splits at top-level `sep` (outside strings and brackets).
fn split_top(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut escaped, mut start) = (0i32, None, false, 0);
    for (i, ch) in text.char_indices() {
        match (quote, ch) {
            (_, _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                out.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// The text between the bracket opening at byte `open` and its match.
fn bracketed(text: &str, open: usize) -> Option<&str> {
    let (mut depth, mut quote, mut escaped) = (0i32, None, false);
    for (i, ch) in text[open..].char_indices() {
        match (quote, ch) {
            (_, _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[open + 1..open + i]);
                }
            }
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    let q = s.chars().next()?;
    (matches!(q, '\'' | '"') && s.len() >= 2 && s.ends_with(q)).then(|| &s[1..s.len() - 1])
}

/// `'key' => expr`, `"key" => expr`, `:key => expr` or `key: expr`.
fn hash_entry(entry: &str) -> Option<(String, String)> {
    let entry = entry.trim();
    if entry.is_empty() {
        return None;
    }
    let parts = split_top(entry, '=');
    if parts.len() >= 2 && parts[1].starts_with('>') {
        let key = parts[0].trim();
        let key = unquote(key).or_else(|| key.strip_prefix(':'))?;
        let rest = entry.split_once("=>")?.1;
        return Some((key.to_string(), rest.trim().to_string()));
    }
    let (key, rest) = entry.split_once(':')?;
    let key = key.trim();
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !rest.starts_with(':'))
        .then(|| (key.to_string(), rest.trim().to_string()))
}

/// A static reading of a cookbook's Ruby: attributes, locals, templates.
struct Ruby<'c> {
    cookbook: &'c Cookbook,
    /// attribute path → right-hand side, later files and lines winning.
    attributes: Vec<(Vec<String>, String)>,
}

/// One entry of a Ruby hash literal.
struct HashKey {
    key: String,
    /// The value's Ruby expression.
    expr: String,
    /// 1-based line of the key in the recipe.
    line: usize,
}

/// A `template ... do ... end` resource of a recipe.
struct TemplateResource {
    recipe: String,
    source: String,
    variables: BTreeMap<String, String>,
}

impl<'c> Ruby<'c> {
    fn new(cookbook: &'c Cookbook) -> Ruby<'c> {
        let mut attributes = Vec::new();
        for (_, text) in &cookbook.attributes {
            for line in text.lines() {
                let line = strip_comment(line).trim();
                let Some(rest) = ["default", "override", "normal"].iter().find_map(|p| line.strip_prefix(p)) else {
                    continue;
                };
                let mut rest = rest.trim_start();
                let mut path = Vec::new();
                while rest.starts_with('[') {
                    let Some(inner) = bracketed(rest, 0) else { break };
                    match unquote(inner) {
                        Some(key) => path.push(key.to_string()),
                        None => break,
                    }
                    rest = rest[inner.len() + 2..].trim_start();
                }
                if let Some(value) = rest.strip_prefix('=').filter(|v| !v.starts_with('='))
                    && !path.is_empty()
                {
                    attributes.push((path, value.trim().to_string()));
                }
            }
        }
        Ruby { cookbook, attributes }
    }

    /// The right-hand side of the attribute whose last key is `key`.
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().rev().find(|(p, _)| p.last().map(String::as_str) == Some(key)).map(|(_, v)| v.as_str())
    }

    /// `name = expr` in a recipe (one line).
    fn local(&self, name: &str) -> Option<(&str, usize, &str)> {
        for (file, text) in &self.cookbook.recipes {
            for (n, line) in text.lines().enumerate() {
                let line = strip_comment(line).trim();
                if let Some(rest) = line.strip_prefix(name)
                    && let Some(value) = rest.trim_start().strip_prefix('=')
                    && !value.starts_with(['=', '~', '>'])
                {
                    return Some((file.as_str(), n + 1, value.trim()));
                }
            }
        }
        None
    }

    /// `name = { ... }`: the recipe file and the entries of a hash literal.
    fn hash_literal(&self, name: &str) -> Option<(&str, Vec<HashKey>)> {
        for (file, text) in &self.cookbook.recipes {
            // Comments out (a quote in a comment would derail the scan); lines kept.
            let code = strip_comments_block(text);
            let mut offset = 0;
            for line in code.split_inclusive('\n') {
                let rest = line.trim_start().strip_prefix(name).map(str::trim_start);
                let value = rest.and_then(|r| r.strip_prefix('=')).map(str::trim_start);
                if value.is_some_and(|v| v.starts_with('{')) {
                    let open = offset + line.find('{')?;
                    let body = bracketed(&code, open)?;
                    let mut out = Vec::new();
                    for entry in split_top(body, ',') {
                        if let Some((key, expr)) = hash_entry(entry) {
                            // `entry` is a slice of `body`, itself a slice of `code`.
                            let start = entry.as_ptr() as usize - code.as_ptr() as usize;
                            let start = start + (entry.len() - entry.trim_start().len());
                            let line = code[..start].matches('\n').count() + 1;
                            out.push(HashKey { key, expr, line });
                        }
                    }
                    return Some((file.as_str(), out));
                }
                offset += line.len();
            }
        }
        None
    }

    fn templates(&self) -> Vec<TemplateResource> {
        let mut out = Vec::new();
        for (file, text) in &self.cookbook.recipes {
            let lines: Vec<&str> = text.lines().collect();
            let mut i = 0;
            while i < lines.len() {
                let code = strip_comment(lines[i]);
                let indent = code.len() - code.trim_start().len();
                let trimmed = code.trim();
                if !(trimmed.starts_with("template ") && trimmed.ends_with(" do")) {
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                while j < lines.len() {
                    let l = strip_comment(lines[j]);
                    if l.trim() == "end" && l.len() - l.trim_start().len() == indent {
                        break;
                    }
                    j += 1;
                }
                let body: String =
                    lines[i + 1..j.min(lines.len())].iter().map(|l| strip_comment(l)).collect::<Vec<_>>().join("\n");
                let mut resource =
                    TemplateResource { recipe: file.clone(), source: String::new(), variables: BTreeMap::new() };
                for l in body.lines() {
                    if let Some(src) = l.trim().strip_prefix("source ").and_then(unquote) {
                        resource.source = src.to_string();
                    }
                }
                if let Some(at) = body.find("variables(")
                    && let Some(inner) = bracketed(&body, at + "variables".len())
                {
                    for entry in split_top(inner, ',') {
                        if let Some((k, v)) = hash_entry(entry) {
                            resource.variables.insert(k, v);
                        }
                    }
                }
                out.push(resource);
                i = j + 1;
            }
        }
        out
    }

    /// Integer arithmetic over literals, locals and attributes (`a + Integer(b)`).
    fn eval_int(&self, expr: &str, depth: u8) -> Option<i64> {
        if depth > 8 {
            return None;
        }
        let mut e = expr.trim();
        e = e.strip_suffix(".to_i").unwrap_or(e);
        if let Some(inner) = e.strip_prefix("Integer(").and_then(|x| x.strip_suffix(')')) {
            return self.eval_int(inner, depth + 1);
        }
        let terms = split_top(e, '+');
        if terms.len() > 1 {
            return terms.iter().map(|t| self.eval_int(t, depth + 1)).sum();
        }
        if let Some(inner) = e.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
            return self.eval_int(inner, depth + 1);
        }
        let digits = unquote(e).unwrap_or(e).replace('_', "");
        if let Ok(n) = digits.parse::<i64>() {
            return Some(n);
        }
        if e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let (_, _, value) = self.local(e)?;
            return self.eval_int(value, depth + 1);
        }
        self.eval_int(self.attribute(last_index(e)?)?, depth + 1)
    }

    /// A duration setting's value: `'30s'`, `"#{drain}s"`, seconds, an attribute.
    fn eval_duration(&self, expr: &str, depth: u8) -> Option<Duration> {
        if depth > 8 {
            return None;
        }
        let e = expr.trim();
        if let Some(inner) = unquote(e) {
            let mut s = inner.to_string();
            while let Some(start) = s.find("#{") {
                let end = start + s[start..].find('}')?;
                let value = self.eval_int(&s[start + 2..end], depth + 1)?;
                s.replace_range(start..=end, &value.to_string());
            }
            return match s.parse::<u64>() {
                Ok(seconds) => Some(Duration::from_secs(seconds)),
                Err(_) => parse_duration(&s).ok(),
            };
        }
        if let Some(n) = self.eval_int(e, depth + 1) {
            return u64::try_from(n).ok().map(Duration::from_secs);
        }
        if e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let (_, _, value) = self.local(e)?;
            return self.eval_duration(value, depth + 1);
        }
        self.eval_duration(self.attribute(last_index(e)?)?, depth + 1)
    }
}

/// Removes `#` comments from each line of a block.
fn strip_comments_block(text: &str) -> String {
    text.lines().map(strip_comment).collect::<Vec<_>>().join("\n")
}

/// `a['b']['c']` → `c`.
fn last_index(expr: &str) -> Option<&str> {
    let inner = expr.trim().strip_suffix(']')?;
    let open = inner.rfind('[')?;
    unquote(&inner[open + 1..])
}

/// `<%= expr %>` tags of a template: (expression, byte range of the tag).
fn erb_tags(text: &str) -> Vec<(String, bool, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(start) = text[pos..].find("<%").map(|s| s + pos) {
        let Some(end) = text[start..].find("%>").map(|e| e + start + 2) else { break };
        let inner = text[start + 2..end - 2].trim_start_matches(['-']).trim_end_matches('-');
        if !inner.starts_with('#') {
            let output = inner.starts_with('=');
            out.push((inner.trim_start_matches('=').trim().to_string(), output, start..end));
        }
        pos = end;
    }
    out
}

/// The template without its `<%# comment %>` tags (their newlines kept, so
/// line numbers hold).
fn without_erb_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<%#") {
        let Some(len) = rest[start..].find("%>") else { break };
        out.push_str(&rest[..start]);
        out.extend(rest[start..start + len].matches('\n'));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Checks a cookbook: config template keys, the unit's command line and stop budget.
pub fn lint_cookbook(cookbook: &Cookbook, longest: Option<&LongestStep>) -> Vec<Finding> {
    let mut r = Report::new(&cookbook.dir);
    let ruby = Ruby::new(cookbook);
    let resources = ruby.templates();
    let known: BTreeSet<&str> = sqsaga_config::known_file_keys().into_iter().collect();
    let mut drain: Option<(Duration, String)> = None;

    for (name, text) in cookbook.templates.iter().filter(|(n, _)| n.ends_with(".json.erb")) {
        let text = &without_erb_comments(text);
        let file = format!("{}/{name}", cookbook.dir);
        let source = basename(name);
        let resource = resources.iter().find(|t| t.source == source);
        // Literal JSON keys of the template itself.
        let mut literal = text.clone();
        for (_, _, range) in erb_tags(text).iter().rev() {
            literal.replace_range(range.clone(), "0");
        }
        let mut checked = false;
        for (key, line) in json_keys(&literal) {
            checked = true;
            if !known.contains(key.as_str()) {
                let path = format!("config.json key `{key}`");
                r.push_in(format!("{file}:{line}"), Severity::Error, path, unknown_key_message(&key, &known));
            }
        }
        // A Ruby hash serialised whole (`JSON.pretty_generate(@config)`, `@config.to_json`).
        for (expr, _, _) in erb_tags(text) {
            let Some(var) = serialised_variable(&expr) else { continue };
            checked = true;
            let var_path = format!("@{var}");
            let Some(resource) = resource else {
                let message = "no recipe renders this template: the keys of the hash are not checked";
                r.push_in(file.clone(), Severity::Warning, var_path, message.into());
                continue;
            };
            let Some(value) = resource.variables.get(&var) else {
                let message = format!("{} passes no `{var}` to this template", resource.recipe);
                r.push_in(file.clone(), Severity::Warning, var_path, message);
                continue;
            };
            let is_name = value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let Some((recipe, keys)) = is_name.then(|| ruby.hash_literal(value)).flatten() else {
                let message = format!("is `{value}`, not a hash literal of the recipe: its keys are not checked");
                r.push_in(file.clone(), Severity::Warning, var_path, message);
                continue;
            };
            for HashKey { key, expr, line } in keys {
                let at = format!("{}/{recipe}:{line}", cookbook.dir);
                let path = format!("config.json key `{key}`");
                if !known.contains(key.as_str()) {
                    let message = format!("{} (written to {name} as {var_path})", unknown_key_message(&key, &known));
                    r.push_in(at, Severity::Error, path, message);
                } else if key == "drain_timeout" {
                    match ruby.eval_duration(&expr, 0) {
                        Some(d) => drain = Some((d, format!("`drain_timeout` = {expr} in {recipe}"))),
                        None => {
                            let message = format!("cannot evaluate `{expr}` statically");
                            r.push_in(at, Severity::Warning, path, message);
                        }
                    }
                }
            }
        }
        if !checked {
            r.push_in(
                file,
                Severity::Warning,
                "config.json".into(),
                "found no keys in this template: not checked".into(),
            );
        }
    }

    let drain = drain.unwrap_or_else(|| {
        let default = sqsaga_config::spec("drain_timeout").and_then(|s| s.default).unwrap_or("0s");
        (parse_duration(default).unwrap_or_default(), format!("the default of `drain_timeout`, {default}"))
    });

    for (name, text) in cookbook.templates.iter().filter(|(n, _)| n.ends_with(".service.erb")) {
        let text = &without_erb_comments(text);
        let file = format!("{}/{name}", cookbook.dir);
        let resource = resources.iter().find(|t| t.source == basename(name));
        let mut stop: Option<(String, usize)> = None;
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            if let Some(value) = line.trim().strip_prefix("ExecStart=") {
                check_exec_start(format!("{file}:{line_no}"), value, &mut r);
            } else if let Some(value) = line.trim().strip_prefix("TimeoutStopSec=") {
                stop = Some((value.to_string(), line_no));
            }
        }
        // systemd's DefaultTimeoutStopSec when the unit sets none.
        let (value, line) = stop.unwrap_or_else(|| ("90s".to_string(), 0));
        let at = if line == 0 { file.clone() } else { format!("{file}:{line}") };
        let path = "TimeoutStopSec".to_string();
        match stop_seconds(&ruby, resource, &value) {
            Some(None) => {} // infinity
            Some(Some((seconds, how))) => {
                let shown = if line == 0 {
                    format!("{seconds}s (unset: systemd's default)")
                } else {
                    format!("{seconds}s{how}")
                };
                if let Some(problem) = grace_problem(seconds, drain.0, &drain.1, longest) {
                    r.push_in(at, Severity::Error, path, format!("{shown}: {problem}"));
                }
            }
            None => {
                r.push_in(at, Severity::Warning, path, format!("cannot evaluate `{value}` statically: not checked"))
            }
        }
    }
    r.findings
}

/// The instance variable a template expression serialises as a whole JSON value.
fn serialised_variable(expr: &str) -> Option<String> {
    let var_after = |s: &str| -> Option<String> {
        let name: String = s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        (!name.is_empty()).then_some(name)
    };
    for call in ["JSON.pretty_generate(@", "JSON.generate(@", "JSON.dump(@"] {
        if let Some(rest) = expr.split_once(call).map(|(_, r)| r) {
            let name = var_after(rest)?;
            return rest[name.len()..].trim_start().starts_with(')').then_some(name);
        }
    }
    let rest = expr.trim().strip_prefix('@')?;
    let name = var_after(rest)?;
    (rest[name.len()..].trim() == ".to_json").then_some(name)
}

/// `"key":` occurrences in a JSON-ish text, with their lines.
fn json_keys(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let after = text.get(j + 1..).unwrap_or("").trim_start();
            if after.starts_with(':') && j <= bytes.len() {
                let key = text.get(start..j).unwrap_or("").to_string();
                out.push((key, text[..start].matches('\n').count() + 1));
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn unknown_key_message(key: &str, known: &BTreeSet<&str>) -> String {
    let hint = sqsaga_config::suggest(key, known.iter().copied())
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    format!("`{key}`{hint} is not a key the binary reads: `sqsaga config check` would refuse the file")
}

fn check_exec_start(at: String, value: &str, r: &mut Report) {
    let path = "ExecStart".to_string();
    let original = value.trim_start_matches(['@', '-', ':', '+', '!']);
    let mut line = original.to_string();
    let tags = erb_tags(&line);
    let first_is_tag = tags.first().is_some_and(|(_, _, range)| range.start == 0);
    for (_, _, range) in tags.iter().rev() {
        line.replace_range(range.clone(), "0");
    }
    let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let Some((program, args)) = words.split_first() else {
        r.push_in(at, Severity::Error, path, "empty".into());
        return;
    };
    if !first_is_tag && !basename(program).starts_with("sqsaga") {
        r.push_in(at, Severity::Warning, path, format!("runs `{program}`, not the sqsaga binary: not checked"));
        return;
    }
    match parse_invocation(args) {
        Ok(Invocation { role: Role::Worker | Role::Orchestrator, .. }) => {}
        Ok(Invocation { role, .. }) => {
            let message = format!("runs {role:?}, neither `orchestrator` nor `worker`");
            r.push_in(at, Severity::Warning, path, message);
        }
        Err(message) => {
            let message = format!("`{original}` is not a command line this binary accepts: {message}");
            r.push_in(at, Severity::Error, path, message);
        }
    }
}

/// TimeoutStopSec in seconds (`Some(None)` for infinity), with how it was resolved.
fn stop_seconds(ruby: &Ruby<'_>, resource: Option<&TemplateResource>, value: &str) -> Option<Option<(i64, String)>> {
    let value = value.trim();
    if value == "infinity" {
        return Some(None);
    }
    let tags = erb_tags(value);
    let (number, suffix, how) = match tags.as_slice() {
        [] => {
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            (digits.parse::<i64>().ok()?, value[digits.len()..].trim().to_string(), String::new())
        }
        [(expr, true, range)] if range.start == 0 => {
            let var = expr.strip_prefix('@')?;
            let resource = resource?;
            let rhs = resource.variables.get(var)?;
            let n = ruby.eval_int(rhs, 0)?;
            let via = match ruby.local(rhs) {
                Some((_, _, local)) => format!(" (`{rhs}` = {local} in {})", resource.recipe),
                None => format!(" (`{rhs}` in {})", resource.recipe),
            };
            (n, value[range.end..].trim().to_string(), via)
        }
        _ => return None,
    };
    let factor = match suffix.as_str() {
        "" | "s" | "sec" | "second" | "seconds" => 1,
        "m" | "min" | "minute" | "minutes" => 60,
        "h" | "hr" | "hour" | "hours" => 3600,
        _ => return None,
    };
    Some(Some((number * factor, how)))
}

// ---------------------------------------------------------------------------
// The command

/// `sqsaga lint-deploy PATH...`: prints each finding as `file: path: message`
/// and a summary; exit 1 on any error.
pub fn run(args: LintArgs) -> Result<ExitCode> {
    let mut findings = Vec::new();
    let mut checked = Vec::new();
    let mut workloads = 0;
    for path in &args.paths {
        lint_path(path, &mut findings, &mut checked, &mut workloads)?;
    }
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = findings.len() - errors;
    for f in &findings {
        println!("{f}");
    }
    let summary =
        format!("{} sqsaga workload(s) in {}: {errors} error(s), {warnings} warning(s)", workloads, checked.join(", "));
    if errors > 0 {
        println!("lint-deploy: FAILED: {summary}");
        Ok(ExitCode::from(1))
    } else {
        println!("lint-deploy: ok: {summary}");
        Ok(ExitCode::SUCCESS)
    }
}

fn is_kustomization(dir: &Path) -> bool {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"].iter().any(|f| dir.join(f).is_file())
}

fn is_cookbook(dir: &Path) -> bool {
    dir.join("metadata.rb").is_file() && dir.join("templates").is_dir()
}

fn lint_path(path: &Path, findings: &mut Vec<Finding>, checked: &mut Vec<String>, workloads: &mut usize) -> Result<()> {
    let shown = path.display().to_string();
    if shown == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read stdin")?;
        let lint = lint_text("<stdin>", &text);
        *workloads += lint.workloads;
        findings.extend(lint.findings);
        checked.push("<stdin>".into());
        return Ok(());
    }
    if path.is_file() {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
        let lint = lint_text(&shown, &text);
        *workloads += lint.workloads;
        findings.extend(lint.findings);
        checked.push(shown);
        return Ok(());
    }
    if !path.is_dir() {
        bail!("{shown}: no such file or directory");
    }
    if is_kustomization(path) {
        let lint = lint_text(&shown, &render(path)?);
        *workloads += lint.workloads;
        findings.extend(lint.findings);
        checked.push(shown);
        return Ok(());
    }
    if is_cookbook(path) {
        findings.extend(lint_cookbook(&read_cookbook(path)?, None));
        checked.push(shown);
        return Ok(());
    }
    // A deploy/ root.
    let mut dirs = Vec::new();
    let base = path.join("k8s/base");
    if is_kustomization(&base) {
        dirs.push(base);
    }
    dirs.extend(subdirs(&path.join("k8s/overlays")).into_iter().filter(|d| is_kustomization(d)));
    let cookbooks: Vec<PathBuf> =
        subdirs(&path.join("chef/cookbooks")).into_iter().filter(|d| is_cookbook(d)).collect();
    if dirs.is_empty() && cookbooks.is_empty() {
        bail!(
            "{shown} is neither a manifest file, a Kustomize directory, a Chef cookbook nor a deploy/ root \
             (with k8s/base, k8s/overlays/* or chef/cookbooks/*)"
        );
    }
    let mut longest = None;
    for dir in dirs {
        let name = dir.display().to_string();
        let lint = lint_text(&name, &render(&dir)?);
        longest = LongestStep::max(longest, lint.longest_step);
        *workloads += lint.workloads;
        findings.extend(lint.findings);
        checked.push(name);
    }
    for dir in cookbooks {
        findings.extend(lint_cookbook(&read_cookbook(&dir)?, longest.as_ref()));
        checked.push(dir.display().to_string());
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn lint_text(file: &str, text: &str) -> ManifestLint {
    match YamlLoader::load_from_str(text) {
        Ok(docs) => lint_manifests(file, &docs),
        Err(e) => ManifestLint {
            findings: vec![Finding {
                file: file.to_string(),
                path: format!("line {}", e.marker().line()),
                severity: Severity::Error,
                message: format!("not valid YAML: {e}"),
            }],
            longest_step: None,
            workloads: 0,
        },
    }
}

/// Renders a Kustomize directory with `kubectl kustomize` (or `kustomize build`).
fn render(dir: &Path) -> Result<String> {
    let shown = dir.display();
    let attempts: [(&str, &[&str]); 2] = [("kubectl", &["kustomize"]), ("kustomize", &["build"])];
    for (tool, args) in attempts {
        let output = match std::process::Command::new(tool).args(args).arg(dir).output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => bail!("cannot run {tool} to render {shown}: {e}"),
        };
        if !output.status.success() {
            bail!("`{tool} {} {shown}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
        }
        return String::from_utf8(output.stdout).with_context(|| format!("{tool} rendered {shown} as non-UTF-8"));
    }
    bail!(
        "cannot render {shown}: neither kubectl nor kustomize is on PATH; render it elsewhere \
         (`kubectl kustomize {shown} > rendered.yaml`) and pass the rendered file"
    )
}

fn read_cookbook(dir: &Path) -> Result<Cookbook> {
    let read_dir = |sub: &str, ext: &str| -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.join(sub)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for entry in entries {
                let path = entry.with_context(|| format!("cannot list {}", d.display()))?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().ends_with(ext) {
                    let text =
                        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                    let rel = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
                    out.push((rel, text));
                }
            }
        }
        out.sort();
        Ok(out)
    };
    Ok(Cookbook {
        dir: dir.display().to_string(),
        recipes: read_dir("recipes", ".rb")?,
        attributes: read_dir("attributes", ".rb")?,
        templates: read_dir("templates", ".erb")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker Deployment the binary is happy with; tests break one thing each.
    const WORKER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sqsaga-inventory
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 60
      containers:
        - name: sqsaga
          image: registry.example:5000/sqsaga:1.2.3
          args: [worker, --service, inventory]
          ports:
            - {name: metrics, containerPort: 8080}
          envFrom:
            - configMapRef: {name: common}
          env:
            - name: SQSAGA_INSTANCE_ID
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          readinessProbe: {httpGet: {path: /readyz, port: metrics}}
          livenessProbe: {httpGet: {path: /healthz, port: metrics}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: common
data:
  SQSAGA_HTTP_ADDR: 0.0.0.0:8080
  SQSAGA_DRAIN_TIMEOUT: 30s
"#;

    fn lint(yaml: &str) -> Vec<Finding> {
        let docs = YamlLoader::load_from_str(yaml).unwrap_or_else(|e| panic!("test YAML: {e}"));
        lint_manifests("test.yaml", &docs).findings
    }

    fn errors(findings: &[Finding]) -> Vec<&Finding> {
        findings.iter().filter(|f| f.severity == Severity::Error).collect()
    }

    fn only_error(yaml: &str) -> Finding {
        let findings = lint(yaml);
        let errs = errors(&findings);
        assert_eq!(errs.len(), 1, "expected one error, got {findings:#?}");
        errs[0].clone()
    }

    #[test]
    fn a_correct_worker_has_no_findings() {
        assert_eq!(lint(WORKER), vec![]);
    }

    #[test]
    fn grace_period_must_exceed_longest_step_plus_drain() {
        // The orchestrator without SQSAGA_DEFINITIONS runs the built-in order
        // saga (longest step 10s); drain 30s: 40s is not enough, 41s is.
        let orchestrator = WORKER
            .replace("[worker, --service, inventory]", "[orchestrator]")
            .replace("terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 40");
        let f = only_error(&orchestrator);
        assert_eq!(f.path, "Deployment/sqsaga-inventory spec.template.spec.terminationGracePeriodSeconds");
        assert!(f.message.contains("10s") && f.message.contains("30s") && f.message.contains("= 40s"), "{f}");
        assert!(f.message.contains("built-in order saga"), "{f}");
        assert_eq!(errors(&lint(&orchestrator.replace("Seconds: 40", "Seconds: 41"))), Vec::<&Finding>::new());

        // Unset means Kubernetes' 30s, which a 30s drain alone already fills.
        let unset = WORKER.replace("      terminationGracePeriodSeconds: 60\n", "");
        let f = only_error(&unset);
        assert!(f.message.starts_with("unset (Kubernetes' default 30s)"), "{f}");
    }

    #[test]
    fn grace_problem_is_strict() {
        let step = LongestStep { timeout: Duration::from_secs(10), source: "x".into() };
        assert!(grace_problem(40, Duration::from_secs(30), "d", Some(&step)).is_some());
        assert!(grace_problem(41, Duration::from_secs(30), "d", Some(&step)).is_none());
        assert!(grace_problem(31, Duration::from_secs(30), "d", None).is_none());
    }

    #[test]
    fn latest_and_untagged_images_are_rejected() {
        let f = only_error(&WORKER.replace("sqsaga:1.2.3", "sqsaga:latest"));
        assert_eq!(f.path, "Deployment/sqsaga-inventory spec.template.spec.containers[0].image");
        assert!(f.message.contains("`latest`"), "{f}");

        // A registry port is not a tag.
        let f = only_error(&WORKER.replace("sqsaga:1.2.3", "sqsaga"));
        assert!(f.message.contains("has no tag"), "{f}");
        assert!(f.message.contains("registry.example:5000/sqsaga"), "{f}");

        assert_eq!(image_problem("sqsaga@sha256:0123"), None);
        assert_eq!(image_problem("sqsaga:latest@sha256:0123"), None);
        assert_eq!(image_problem("localhost:5000/sqsaga:0.1.0"), None);
        assert!(image_problem("ubuntu").is_some());
    }

    #[test]
    fn unknown_variables_are_named_where_they_are_set() {
        let f = only_error(
            &WORKER.replace("  SQSAGA_DRAIN_TIMEOUT: 30s\n", "  SQSAGA_DRAIN_TIMEOUT: 30s\n  SQSAGA_TYPO: \"1\"\n"),
        );
        assert_eq!(f.path, "ConfigMap/common data.SQSAGA_TYPO");
        assert!(f.message.contains("`SQSAGA_TYPO`"), "{f}");
        assert!(f.message.contains("envFrom[0]"), "{f}");

        // The hint comes from the settings table.
        let f = only_error(&WORKER.replace("  SQSAGA_DRAIN_TIMEOUT: 30s\n", "  SQSAGA_DRAIN_TIMOUT: 30s\n"));
        assert!(f.message.contains("did you mean `SQSAGA_DRAIN_TIMEOUT`"), "{f}");
    }

    #[test]
    fn values_are_checked_by_the_binarys_resolver() {
        let f = only_error(&WORKER.replace("SQSAGA_DRAIN_TIMEOUT: 30s", "SQSAGA_DRAIN_TIMEOUT: soon"));
        assert_eq!(f.path, "ConfigMap/common data.SQSAGA_DRAIN_TIMEOUT");
        assert!(f.message.contains("SQSAGA_DRAIN_TIMEOUT=soon"), "{f}");
    }

    #[test]
    fn probes_must_use_the_served_paths_on_the_listening_port() {
        let f = only_error(&WORKER.replace("path: /healthz", "path: /health"));
        assert_eq!(f.path, "Deployment/sqsaga-inventory spec.template.spec.containers[0].livenessProbe.httpGet.path");
        assert!(f.message.contains("`/health`"), "{f}");

        let f = only_error(&WORKER.replace("path: /readyz", "path: /healthz"));
        assert!(f.path.ends_with("readinessProbe.httpGet.path"), "{f}");

        let f =
            only_error(&WORKER.replace("{name: metrics, containerPort: 8080}", "{name: metrics, containerPort: 9090}"));
        assert!(f.path.ends_with("ports[0].containerPort"), "{f}");

        // The binary's default address is loopback, which the kubelet cannot reach.
        let f = only_error(&WORKER.replace("  SQSAGA_HTTP_ADDR: 0.0.0.0:8080\n", ""));
        assert!(f.message.contains("127.0.0.1:8080") && f.message.contains("default of `http_addr`"), "{f}");
    }

    #[test]
    fn arguments_are_parsed_by_the_binarys_own_parser() {
        let f = only_error(&WORKER.replace("[worker, --service, inventory]", "[worker, --servce, inventory]"));
        assert!(f.path.ends_with("containers[0].args"), "{f}");
        assert!(f.message.contains("--servce"), "{f}");

        let f = only_error(&WORKER.replace("[worker, --service, inventory]", "[worker, --service, shipping]"));
        assert!(f.message.contains("`shipping`"), "{f}");
    }

    #[test]
    fn replicas_under_an_autoscaler_are_rejected() {
        let scaled = format!(
            "{}---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: s}}\nspec:\n  scaleTargetRef: {{name: sqsaga-inventory}}\n",
            WORKER.replace("spec:\n  template:", "spec:\n  replicas: 3\n  template:")
        );
        let f = only_error(&scaled);
        assert_eq!(f.path, "Deployment/sqsaga-inventory spec.replicas");
        assert!(f.message.contains("replicas: 3") && f.message.contains("ScaledObject/s"), "{f}");
    }

    #[test]
    fn definitions_are_read_from_the_mounted_config_map() {
        let orchestrator = WORKER.replace("[worker, --service, inventory]", "[orchestrator]").replace(
            "          readinessProbe:",
            "          volumeMounts: [{name: defs, mountPath: /etc/defs}]\n          readinessProbe:",
        ) + "  SQSAGA_DEFINITIONS: /etc/defs\n"
            + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: defs}\ndata:\n  slow.yaml: |\n"
            + "    name: slow\n    version: 1\n    deadline: 5m\n    steps:\n"
            + "      - {name: a, service: inventory, action: inventory.reserve, contract: inventory/v1, timeout: 45s}\n";
        let with_volume = orchestrator
            .replace("      containers:", "      volumes: [{name: defs, configMap: {name: defs}}]\n      containers:");
        let f = only_error(&with_volume);
        assert!(f.path.ends_with("terminationGracePeriodSeconds"), "{f}");
        assert!(f.message.contains("45s") && f.message.contains("ConfigMap/defs data.slow.yaml"), "{f}");
    }

    fn cookbook(recipe_extra: &str, unit_stop: &str) -> Cookbook {
        Cookbook {
            dir: "cb".into(),
            recipes: vec![(
                "recipes/default.rb".into(),
                format!(
                    "sqsaga = node['sqsaga']\n\
                     drain_seconds = Integer(sqsaga['drain_timeout_seconds'])\n\
                     stop = drain_seconds + Integer(sqsaga['margin']) # seconds\n\
                     config = {{\n  'queue_url' => 'https://q', # comment, with a comma\n  'drain_timeout' => \"#{{drain_seconds}}s\",\n{recipe_extra}}}.reject {{ |_k, v| v.nil? }}\n\
                     template '/etc/sqsaga/config.json' do\n  source 'config.json.erb'\n  variables(config: config)\nend\n\
                     template '/etc/systemd/system/sqsaga.service' do\n  source 'sqsaga.service.erb'\n  variables(\n    service: 'inventory',\n    stop: stop\n  )\nend\n"
                ),
            )],
            attributes: vec![(
                "attributes/default.rb".into(),
                "default['sqsaga']['drain_timeout_seconds'] = 30 # drain\ndefault['sqsaga']['margin'] = 30\n".into(),
            )],
            templates: vec![
                ("templates/config.json.erb".into(), "<%# comment -%>\n<%= JSON.pretty_generate(@config) %>\n".into()),
                (
                    "templates/sqsaga.service.erb".into(),
                    format!(
                        "[Service]\nExecStart=/opt/sqsaga worker --service <%= @service %>\nTimeoutStopSec={unit_stop}\n"
                    ),
                ),
            ],
        }
    }

    #[test]
    fn cookbook_keys_and_stop_budget() {
        let step = LongestStep { timeout: Duration::from_secs(10), source: "defs".into() };
        assert_eq!(lint_cookbook(&cookbook("", "<%= @stop %>s"), Some(&step)), vec![]);

        let findings = lint_cookbook(&cookbook("  'queue_ur' => 'x',\n", "<%= @stop %>s"), Some(&step));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].file, "cb/recipes/default.rb:7");
        assert!(findings[0].message.contains("did you mean `queue_url`"), "{}", findings[0]);

        // 35s of stop budget < 30s drain + 10s step.
        let findings = lint_cookbook(&cookbook("", "35s"), Some(&step));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(
            (findings[0].file.as_str(), findings[0].path.as_str()),
            ("cb/templates/sqsaga.service.erb:3", "TimeoutStopSec")
        );
        assert!(findings[0].message.contains("= 40s"), "{}", findings[0]);
    }

    #[test]
    fn ruby_helpers() {
        assert_eq!(strip_comment("a = '#x' # c"), "a = '#x' ");
        assert_eq!(strip_comment("\"#{a}s\" # c"), "\"#{a}s\" ");
        assert_eq!(serialised_variable("JSON.pretty_generate(@config)").as_deref(), Some("config"));
        assert_eq!(serialised_variable("@config.to_json").as_deref(), Some("config"));
        assert_eq!(serialised_variable("@config['a'].to_json"), None);
        let keys: Vec<String> = json_keys("{\n  \"a\": 0,\n  \"b\" : \"c:\"\n}").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(without_erb_comments("a<%# \"x\": 1\n -%>b"), "a\nb");
        assert_eq!(hash_entry(" 'k' => v['x'] "), Some(("k".into(), "v['x']".into())));
        assert_eq!(hash_entry("k: 1").map(|(k, _)| k).as_deref(), Some("k"));
    }
}
