//! Checks of Kubernetes manifests (a render or a manifest file), over the
//! typed objects of [`crate::k8s`].
//!
//! On every container whose image (or command) is `sqsaga*`: every variable
//! set (`env`, and the keys of `envFrom` ConfigMaps and Secrets) is one the
//! binary knows, and their values pass its checks; the arguments are a real
//! subcommand with real flags, a worker has a service the binary implements;
//! the binary listens on a non-loopback address whose port is the container
//! port named `metrics`, which the probes use, with `/readyz` for readiness
//! and `/healthz` for liveness; `terminationGracePeriodSeconds` exceeds the
//! longest step timeout of the definitions the orchestrator mounts plus the
//! drain budget. On every workload: no image without a tag or tagged
//! `latest`, no `replicas` on a Deployment that a KEDA ScaledObject (or an
//! HPA) scales, and a Prometheus scrape path the binary serves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sqsaga_config::{CONFIG_ENV, ENV_PREFIX, Kind, SETTINGS, SettingSpec, Settings, Sources, known_env_vars};
use sqsaga_core::definition::is_saga_file;
use sqsaga_core::duration::{format_duration, parse_duration};
use sqsaga_http::{HEALTHZ, METRICS, PATHS, READYZ};
use yaml_rust2::YamlLoader;

use crate::k8s::{self, Body, IntOrString, Object, PodSpec, Probe, Scalar};
use crate::{Binary, Finding, Invocation, LongestStep, Report, Role, Severity, basename};

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

/// Checks the objects of one render (or manifest file, multi-document
/// YAML) named `file`.
pub fn lint_manifests(file: &str, text: &str, binary: &Binary<'_>) -> ManifestLint {
    let docs = match YamlLoader::load_from_str(text) {
        Ok(docs) => docs,
        Err(e) => {
            return ManifestLint {
                findings: vec![Finding {
                    file: file.to_string(),
                    path: format!("line {}", e.marker().line()),
                    severity: Severity::Error,
                    message: format!("not valid YAML: {e}"),
                }],
                longest_step: None,
                workloads: 0,
            };
        }
    };
    let mut r = Report::new(file);
    let (objs, unreadable) = k8s::objects(&docs);
    for u in unreadable {
        r.error(u.id, format!("cannot be read as a Kubernetes object ({}): not checked", u.message));
    }
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
        .map(|(i, c)| analyse(&objs, i, c, binary, &mut r))
        .collect();
    let longest = deployed_definitions(&objs, &all, &analysed, binary, &mut r);
    check_grace_periods(&objs, &all, &analysed, longest.as_ref(), &mut r);

    let workloads = analysed.iter().map(|a| all[a.container].obj).collect::<BTreeSet<_>>().len();
    ManifestLint { findings: r.findings, longest_step: longest, workloads }
}

fn find<'o>(objs: &'o [Object], kind: &str, name: &str, namespace: &str) -> Option<&'o Object> {
    objs.iter().find(|o| {
        o.kind == kind && o.name == name && (o.namespace.is_empty() || namespace.is_empty() || o.namespace == namespace)
    })
}

fn config_map_data<'o>(objs: &'o [Object], name: &str, namespace: &str) -> Option<&'o BTreeMap<String, Scalar>> {
    match &find(objs, "ConfigMap", name, namespace)?.body {
        Body::ConfigMap { data } => Some(data),
        _ => None,
    }
}

/// One container of a workload, with where it is.
struct ContainerAt<'a> {
    obj: usize,
    id: String,
    namespace: &'a str,
    pod: &'a PodSpec,
    pod_path: &'static str,
    /// `spec.template.spec.containers[0]`
    base: String,
    /// An init container (only its image is checked: it runs to completion first).
    init: bool,
    spec: &'a k8s::Container,
}

impl ContainerAt<'_> {
    fn at(&self, field: &str) -> String {
        if field.is_empty() {
            format!("{} {}", self.id, self.base)
        } else {
            format!("{} {}.{field}", self.id, self.base)
        }
    }

    fn name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or("?")
    }

    /// Whether it runs this binary: image `…/sqsaga*` or command `…/sqsaga*`.
    fn is_sqsaga(&self) -> bool {
        let image = self.spec.image.as_deref().map(image_repository).unwrap_or("");
        let command = self.spec.command.as_ref().and_then(|c| c.first()).map(Scalar::to_string).unwrap_or_default();
        basename(image).starts_with("sqsaga") || basename(&command).starts_with("sqsaga")
    }

    /// Where findings about the command line point.
    fn args_at(&self, or: &str) -> String {
        if self.spec.args.is_some() { self.at("args") } else { self.at(or) }
    }
}

fn containers(objs: &[Object]) -> Vec<ContainerAt<'_>> {
    let mut out = Vec::new();
    for (i, obj) in objs.iter().enumerate() {
        let Body::Workload { pod, pod_path } = &obj.body else { continue };
        for (list, init, items) in
            [("initContainers", true, &pod.init_containers), ("containers", false, &pod.containers)]
        {
            for (n, spec) in items.iter().enumerate() {
                out.push(ContainerAt {
                    obj: i,
                    id: obj.id(),
                    namespace: &obj.namespace,
                    pod,
                    pod_path,
                    base: format!("{pod_path}.{list}[{n}]"),
                    init,
                    spec,
                });
            }
        }
    }
    out
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

fn check_image(c: &ContainerAt<'_>, r: &mut Report) {
    match &c.spec.image {
        Some(image) => {
            if let Some(problem) = image_problem(image) {
                r.error(c.at("image"), problem);
            }
        }
        None => r.error(c.at("image"), format!("container `{}` has no image", c.name())),
    }
}

/// A value as written, for messages.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".to_string(),
    }
}

/// No fixed `replicas` on what an autoscaler scales: Flux (or `kubectl
/// apply`) would reset the autoscaler's count on every reconciliation.
fn check_scaling(objs: &[Object], r: &mut Report) {
    for scaler in objs {
        let Body::Scaler(target) = &scaler.body else { continue };
        let Some(name) = &target.name else {
            r.error(scaler.at("spec.scaleTargetRef.name"), "no scale target");
            continue;
        };
        let kind = target.kind.as_deref().unwrap_or("Deployment");
        let Some(workload) = find(objs, kind, name, &scaler.namespace) else {
            r.warn(scaler.at("spec.scaleTargetRef.name"), format!("scales {kind}/{name}, which is not in this render"));
            continue;
        };
        if let Some(replicas) = &workload.replicas {
            r.error(
                workload.at("spec.replicas"),
                format!(
                    "fixed `replicas: {}` on a {kind} that {} scales: every reconciliation (Flux, kubectl apply) \
                     resets the autoscaler's replica count; remove `replicas`",
                    shown(replicas),
                    scaler.id()
                ),
            );
        }
    }
}

/// A Prometheus scrape annotation must name the path the binary serves.
fn check_services(objs: &[Object], r: &mut Report) {
    for svc in objs {
        let Body::Service { annotations, selector } = &svc.body else { continue };
        let Some(path) = annotations.get("prometheus.io/path").map(Scalar::to_string) else { continue };
        let selects_sqsaga = selector.values().any(|v| *v == Scalar::Text("sqsaga".into()));
        if selects_sqsaga && path != METRICS {
            r.error(
                svc.at("metadata.annotations.prometheus.io/path"),
                format!("`{path}` is not where the binary serves metrics ({METRICS})"),
            );
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

fn container_env(objs: &[Object], c: &ContainerAt<'_>, r: &mut Report) -> Vec<EnvEntry> {
    let mut out = Vec::new();
    for (i, source) in c.spec.env_from.iter().enumerate() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        let via = c.at(&format!("envFrom[{i}]"));
        let (kind, reference) = match (&source.config_map_ref, &source.secret_ref) {
            (Some(reference), _) => ("ConfigMap", reference),
            (None, Some(reference)) => ("Secret", reference),
            (None, None) => {
                r.warn(via, "envFrom entry with neither configMapRef nor secretRef: not checked");
                continue;
            }
        };
        let Some(name) = &reference.name else {
            r.error(via, format!("{kind} reference without a name"));
            continue;
        };
        let Some(obj) = find(objs, kind, name, c.namespace) else {
            if reference.optional != Some(true) {
                r.warn(via, format!("{kind}/{name} is not in this render: the variables it sets are not checked"));
            }
            continue;
        };
        let entries: Vec<(&str, &str, EnvValue)> = match &obj.body {
            Body::ConfigMap { data } => {
                data.iter().map(|(k, v)| ("data", k.as_str(), EnvValue::Literal(v.to_string()))).collect()
            }
            Body::Secret { keys } => keys.iter().map(|(s, k)| (*s, k.as_str(), EnvValue::Runtime)).collect(),
            _ => Vec::new(),
        };
        for (section, key, value) in entries {
            out.push(EnvEntry {
                name: format!("{prefix}{key}"),
                value,
                at: obj.at(&format!("{section}.{key}")),
                via: Some(via.clone()),
            });
        }
    }
    for (i, e) in c.spec.env.iter().enumerate() {
        let Some(name) = &e.name else {
            r.error(c.at(&format!("env[{i}]")), "env entry without a name");
            continue;
        };
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => EnvValue::Literal(v.to_string()),
            (None, Some(from)) => {
                let literal = from.config_map_key_ref.as_ref().and_then(|cm| {
                    let data = config_map_data(objs, cm.name.as_deref()?, c.namespace)?;
                    data.get(cm.key.as_deref().unwrap_or("")).map(Scalar::to_string)
                });
                literal.map_or(EnvValue::Runtime, EnvValue::Literal)
            }
            (None, None) => EnvValue::Literal(String::new()),
        };
        out.push(EnvEntry { name: name.clone(), value, at: c.at(&format!("env[{i}].name")), via: None });
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

/// The container's command line, parsed by the binary; `None` when it is not
/// checked (a wrapper command) or does not parse (reported).
fn check_args(c: &ContainerAt<'_>, binary: &Binary<'_>, r: &mut Report) -> Option<Invocation> {
    let strings =
        |list: &Option<Vec<Scalar>>| -> Vec<String> { list.iter().flatten().map(Scalar::to_string).collect() };
    let command = strings(&c.spec.command);
    let args = strings(&c.spec.args);
    let argv: Vec<String> = match command.split_first() {
        None => args, // the image's ENTRYPOINT is the binary
        Some((program, rest)) if basename(program).starts_with("sqsaga") => rest.iter().chain(&args).cloned().collect(),
        Some((program, _)) => {
            r.warn(c.at("command"), format!("runs `{program}`, not the sqsaga binary: its arguments are not checked"));
            return None;
        }
    };
    let at = c.args_at("command");
    match (binary.parse_command_line)(&argv) {
        Ok(inv) => {
            if let Role::Other(name) = &inv.role {
                r.warn(at, format!("runs `sqsaga {name}`, which is neither `orchestrator` nor `worker`"));
            }
            Some(inv)
        }
        Err(message) => {
            r.error(at, format!("`sqsaga {}` is not a command line this binary accepts: {message}", argv.join(" ")));
            None
        }
    }
}

/// What one sqsaga container turned out to run with.
struct Analysed {
    container: usize,
    /// `None`: a wrapper command, or arguments that do not parse.
    role: Option<Role>,
    drain: Duration,
    drain_source: String,
    definitions: Option<String>,
}

impl Analysed {
    fn serves(&self) -> bool {
        self.role.as_ref().is_some_and(Role::serves)
    }
}

fn analyse(objs: &[Object], container: usize, c: &ContainerAt<'_>, binary: &Binary<'_>, r: &mut Report) -> Analysed {
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

    let inv = check_args(c, binary, r);
    let reads_file = inv.as_ref().is_some_and(|i| i.config.is_some()) || effective.contains_key(CONFIG_ENV);
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
    if let Some(inv) = &inv {
        if let Some(dir) = &inv.data_dir {
            sources = sources.with_flag("data_dir", dir.display().to_string());
        }
        if let Some(service) = &inv.service {
            sources = sources.with_flag("service", service.clone());
        }
    }
    let args_at = c.args_at("");
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

    if let Some(inv) = &inv {
        if inv.role == Role::Worker {
            check_worker_service(c, inv, settings.as_ref(), &effective, binary, r);
        }
        if inv.role.serves() {
            check_http(c, listen, r);
        }
    }

    Analysed { container, role: inv.map(|i| i.role), drain, drain_source, definitions }
}

fn check_worker_service(
    c: &ContainerAt<'_>,
    inv: &Invocation,
    settings: Option<&Settings>,
    effective: &BTreeMap<&str, &EnvEntry>,
    binary: &Binary<'_>,
    r: &mut Report,
) {
    let at = c.args_at("");
    let service = settings.and_then(|s| s.service.clone()).or_else(|| inv.service.clone());
    let Some(service) = service else {
        if settings.is_some() {
            r.error(at, "a worker needs its service: pass `--service NAME` or set SQSAGA_SERVICE");
        }
        return;
    };
    if !binary.services.contains(&service.as_str()) {
        r.error(at.clone(), format!("service `{service}`: this binary implements {}", binary.services.join(", ")));
    }
    if let (Some(flag), Some(EnvEntry { value: EnvValue::Literal(env), at: env_at, .. })) =
        (&inv.service, effective.get("SQSAGA_SERVICE").copied())
        && !env.is_empty()
        && env != flag
    {
        r.warn(
            env_at.clone(),
            format!("SQSAGA_SERVICE={env} disagrees with `--service {flag}` in the arguments (the flag wins)"),
        );
    }
}

/// A container port: name, number (when a number), index.
type Port<'a> = (Option<&'a str>, Option<i64>, usize);

/// The container port named `metrics` is where the binary listens, and the
/// probes ask for paths it serves on that port. `listen` is `None` when the
/// manifest does not say (a config file may).
fn check_http(c: &ContainerAt<'_>, listen: Option<(SocketAddr, String)>, r: &mut Report) {
    let ports: Vec<Port<'_>> = c
        .spec
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_deref(), p.container_port.as_ref().and_then(container_port), i))
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
            match ports.iter().find(|(name, _, _)| *name == Some("metrics")) {
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

    let probes: [(&str, Option<&Probe>, &str, &str); 3] = [
        (
            "readinessProbe",
            c.spec.readiness_probe.as_ref(),
            READYZ,
            "readiness must follow /readyz, which fails while draining or drifted",
        ),
        (
            "livenessProbe",
            c.spec.liveness_probe.as_ref(),
            HEALTHZ,
            "liveness must follow /healthz, which fails only when a loop is stuck",
        ),
        ("startupProbe", c.spec.startup_probe.as_ref(), HEALTHZ, "a startup probe waits for /healthz"),
    ];
    for (probe, p, expected, why) in probes {
        let Some(p) = p else {
            if probe != "startupProbe" {
                r.warn(c.at(probe), format!("no {probe}: the binary serves {expected} for it"));
            }
            continue;
        };
        if let Some(get) = &p.http_get {
            let path_at = c.at(&format!("{probe}.httpGet.path"));
            let path = get.path.as_deref().unwrap_or("/");
            let bare = path.split('?').next().unwrap_or(path);
            if !PATHS.contains(&bare) {
                r.error(
                    path_at,
                    format!("probe path `{path}` is not served by the binary (it serves {}); {why}", PATHS.join(", ")),
                );
            } else if bare != expected {
                r.error(path_at, format!("probe path `{path}` is the wrong endpoint: {why}"));
            }
            if let Some(scheme) = &get.scheme
                && !scheme.eq_ignore_ascii_case("HTTP")
            {
                r.error(c.at(&format!("{probe}.httpGet.scheme")), format!("`{scheme}`: the binary serves plain HTTP"));
            }
            let by_metrics = get.port.as_ref().and_then(IntOrString::name) == Some("metrics");
            if let Some((port, from)) = &expected_port
                && (metrics_ok || !by_metrics)
            {
                check_probe_port(c, &format!("{probe}.httpGet.port"), get.port.as_ref(), &ports, *port, from, r);
            }
        } else if let Some(tcp) = &p.tcp_socket {
            if let Some((port, from)) = &expected_port {
                let field = format!("{probe}.tcpSocket.port");
                check_probe_port(c, &field, tcp.port.as_ref(), &ports, *port, from, r);
            }
            r.warn(c.at(probe), format!("a TCP probe only sees the port open; the binary serves {expected}"));
        } else if p.grpc.is_some() {
            r.error(
                c.at(&format!("{probe}.grpc")),
                format!("the binary serves no gRPC health check: use httpGet {expected}"),
            );
        } else {
            r.warn(c.at(probe), format!("not an HTTP probe: not checked (the binary serves {expected})"));
        }
    }
}

/// A `containerPort`, which must be a number (a quoted number is not one to
/// Kubernetes either).
fn container_port(port: &IntOrString) -> Option<i64> {
    match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::Text(_) => None,
    }
}

fn check_probe_port(
    c: &ContainerAt<'_>,
    field: &str,
    value: Option<&IntOrString>,
    ports: &[Port<'_>],
    listen: u16,
    from: &str,
    r: &mut Report,
) {
    let at = c.at(field);
    let Some(value) = value else {
        r.error(at, "probe without a port");
        return;
    };
    let number = match (value.number(), value.name()) {
        (Some(n), _) => Some(n),
        (None, Some(name)) => match ports.iter().find(|(n, _, _)| *n == Some(name)) {
            Some((_, number, _)) => *number,
            None => {
                r.error(at, format!("no container port named `{name}`"));
                return;
            }
        },
        (None, None) => None,
    };
    if number != Some(i64::from(listen)) {
        let shown = number.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        r.error(at, format!("probes port {shown}, but the binary listens on {listen} ({from})"));
    } else if value.name() != Some("metrics") && ports.iter().any(|(n, _, _)| *n == Some("metrics")) {
        r.warn(at, "use the named port `metrics`, so the probe follows the port declaration");
    }
}

/// The saga definitions the orchestrators load: the ConfigMap files mounted
/// where SQSAGA_DEFINITIONS points, or the built-in saga when unset.
fn deployed_definitions(
    objs: &[Object],
    all: &[ContainerAt<'_>],
    analysed: &[Analysed],
    binary: &Binary<'_>,
    r: &mut Report,
) -> Option<LongestStep> {
    let mut longest = None;
    for a in analysed {
        let c = &all[a.container];
        let Some(path) = &a.definitions else {
            if a.role == Some(Role::Orchestrator) {
                let source = "the binary's built-in definitions (SQSAGA_DEFINITIONS unset)";
                longest = LongestStep::max(longest, longest_of(binary.builtin_definition, source).ok().flatten());
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
fn mounted_files(objs: &[Object], c: &ContainerAt<'_>, path: &str) -> Result<Vec<(String, String, String)>, String> {
    let path = path.trim_end_matches('/');
    for mount in &c.spec.volume_mounts {
        let Some(mount_path) = mount.mount_path.as_deref().map(|m| m.trim_end_matches('/')) else { continue };
        let rel = if path == mount_path {
            ""
        } else if let Some(rest) = path.strip_prefix(mount_path).and_then(|r| r.strip_prefix('/')) {
            rest
        } else {
            continue;
        };
        let volume_name = mount.name.as_deref().unwrap_or("");
        let Some(volume) = c.pod.volumes.iter().find(|v| v.name.as_deref() == Some(volume_name)) else {
            return Err(format!("volume `{volume_name}` is not declared"));
        };
        let Some(cm_volume) = &volume.config_map else {
            return Err(format!("volume `{volume_name}` is not a ConfigMap: its definitions cannot be checked"));
        };
        let cm_name = cm_volume.name.as_deref().unwrap_or("");
        let (Some(cm), Some(data)) =
            (find(objs, "ConfigMap", cm_name, c.namespace), config_map_data(objs, cm_name, c.namespace))
        else {
            return Err(format!("ConfigMap/{cm_name} is not in this render"));
        };
        // File name in the mount → key in the ConfigMap.
        let mut files: Vec<(String, String)> = match &cm_volume.items {
            Some(items) => items.iter().filter_map(|i| Some((i.path.clone()?, i.key.clone()?))).collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        let sub_path = mount.sub_path.as_deref();
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
                let text = data.get(&key)?.to_string();
                Some((format!("ConfigMap/{cm_name} data.{key}"), cm.at(&format!("data.{key}")), text))
            })
            .collect());
    }
    Err("no volume is mounted there".into())
}

/// Kubernetes' default grace period.
const DEFAULT_GRACE_SECONDS: i64 = 30;

fn check_grace_periods(
    objs: &[Object],
    all: &[ContainerAt<'_>],
    analysed: &[Analysed],
    longest: Option<&LongestStep>,
    r: &mut Report,
) {
    let mut pods: BTreeMap<usize, Vec<&Analysed>> = BTreeMap::new();
    for a in analysed.iter().filter(|a| a.serves()) {
        pods.entry(all[a.container].obj).or_default().push(a);
    }
    for (obj, members) in pods {
        let Some(a) = members.iter().max_by_key(|a| a.drain) else { continue };
        let c = &all[a.container];
        let field = format!("{}.terminationGracePeriodSeconds", c.pod_path);
        let (grace, shown) = match &c.pod.termination_grace_period_seconds {
            Some(Scalar::Int(n)) => (*n, format!("{n}s")),
            None => (DEFAULT_GRACE_SECONDS, format!("unset (Kubernetes' default {DEFAULT_GRACE_SECONDS}s)")),
            Some(_) => {
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

#[cfg(test)]
mod tests;
