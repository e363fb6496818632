//! `sqsaga lint-deploy`: checks that deployment artifacts agree with what the
//! sqsaga binary reads and serves.
//!
//! A path is a rendered manifest (multi-document YAML, `-` for stdin), a
//! Kustomize directory (rendered with `kubectl kustomize`, or `kustomize
//! build`), a Chef cookbook, or a `deploy/` root (its `k8s/base`, every
//! `k8s/overlays/*` and every `chef/cookbooks/*`).
//!
//! What is known comes from the code that parses and serves it, never from a
//! second list: environment variables, file keys and defaults from the
//! settings table (`sqsaga_config::SETTINGS`, checked with the real resolver,
//! `Settings::resolve`), HTTP paths from `sqsaga_http` (the constants its
//! router uses), step timeouts from the deployed saga definitions parsed by
//! `sqsaga_core::yaml`. What only the binary knows — its command-line parser,
//! the services it implements, its built-in saga — comes in as a [`Binary`],
//! so this crate does not depend on the binary (nor on the orchestrator).
//!
//! Kubernetes checks: see [`manifests`]. Chef checks: see [`chef`], which
//! reads the cookbook statically and no longer evaluates its Ruby (the deploy
//! checks render it with Ruby itself). The checks are pure functions over
//! texts ([`lint_manifests`], [`lint_cookbook`]); only [`lint_paths`] touches
//! the disk, stdin and kubectl.

pub mod chef;
mod k8s;
pub mod manifests;
#[cfg(test)]
mod testing;

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use chef::{Cookbook, lint_cookbook, read_cookbook};
pub use manifests::{ManifestLint, grace_problem, image_problem, lint_manifests};

/// What lint-deploy needs to know about the binary it checks against.
pub struct Binary<'a> {
    /// The participant services a worker may run (`--service`).
    pub services: &'a [&'a str],
    /// The saga definition an orchestrator runs when `SQSAGA_DEFINITIONS` is unset.
    pub builtin_definition: &'a str,
    /// Parses a command line (without the program name) with the binary's
    /// own parser; the error is the parser's message, one line.
    pub parse_command_line: &'a dyn Fn(&[String]) -> Result<Invocation, String>,
}

/// What a sqsaga process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `sqsaga orchestrator`.
    Orchestrator,
    /// `sqsaga worker`.
    Worker,
    /// Another subcommand (named), which neither listens nor drains.
    Other(String),
}

impl Role {
    /// The long-running roles, which listen for probes and drain on SIGTERM.
    pub fn serves(&self) -> bool {
        matches!(self, Role::Orchestrator | Role::Worker)
    }
}

/// A parsed command line: what the checks need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The subcommand.
    pub role: Role,
    /// `--service`, which a worker needs (or `SQSAGA_SERVICE`).
    pub service: Option<String>,
    /// `--data-dir`, a setting the resolver must see as a flag.
    pub data_dir: Option<PathBuf>,
    /// `--config PATH`, whose content lint-deploy cannot see.
    pub config: Option<PathBuf>,
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
    /// The file (or rendered directory) it is in, with `:line` for cookbook files.
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
pub(crate) struct Report {
    file: String,
    pub(crate) findings: Vec<Finding>,
    seen: BTreeSet<(String, String, String)>,
}

impl Report {
    pub(crate) fn new(file: &str) -> Report {
        Report { file: file.to_string(), findings: Vec::new(), seen: BTreeSet::new() }
    }

    /// A finding in another file than the report's (a cookbook's templates).
    pub(crate) fn push_in(&mut self, file: String, severity: Severity, path: String, message: String) {
        if self.seen.insert((file.clone(), path.clone(), message.clone())) {
            self.findings.push(Finding { file, path, severity, message });
        }
    }

    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let file = self.file.clone();
        self.push_in(file, Severity::Error, path.into(), message.into());
    }

    pub(crate) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let file = self.file.clone();
        self.push_in(file, Severity::Warning, path.into(), message.into());
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
    pub(crate) fn max(a: Option<LongestStep>, b: Option<LongestStep>) -> Option<LongestStep> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.timeout > a.timeout { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// Why the paths could not be checked at all (as opposed to a [`Finding`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LintError {
    #[error("{0}: no such file or directory")]
    Missing(String),
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: String },
    #[error(
        "{0} is neither a manifest file, a Kustomize directory, a Chef cookbook nor a deploy/ root \
         (with k8s/base, k8s/overlays/* or chef/cookbooks/*)"
    )]
    Unrecognised(String),
    #[error("cannot run {tool} to render {dir}: {cause}")]
    Spawn { tool: String, dir: String, cause: String },
    #[error("`{command}` failed: {stderr}")]
    Render { command: String, stderr: String },
    #[error("{tool} rendered {dir} as non-UTF-8")]
    NotUtf8 { tool: String, dir: String },
    #[error(
        "cannot render {0}: neither kubectl nor kustomize is on PATH; render it elsewhere \
         (`kubectl kustomize {0} > rendered.yaml`) and pass the rendered file"
    )]
    NoRenderer(String),
}

/// What a run over several paths found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Every finding, in the order found.
    pub findings: Vec<Finding>,
    /// The paths checked (directories of a deploy/ root named one by one).
    pub checked: Vec<String>,
    /// Workloads running the sqsaga binary.
    pub workloads: usize,
}

impl Outcome {
    /// How many findings are errors.
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }

    /// `N sqsaga workload(s) in PATHS: E error(s), W warning(s)`.
    pub fn summary(&self) -> String {
        let errors = self.errors();
        let warnings = self.findings.len() - errors;
        format!(
            "{} sqsaga workload(s) in {}: {errors} error(s), {warnings} warning(s)",
            self.workloads,
            self.checked.join(", ")
        )
    }

    fn add(&mut self, name: String, lint: ManifestLint) {
        self.workloads += lint.workloads;
        self.findings.extend(lint.findings);
        self.checked.push(name);
    }
}

/// Checks every path (see the module header for what a path may be).
pub fn lint_paths(paths: &[PathBuf], binary: &Binary<'_>) -> Result<Outcome, LintError> {
    let mut outcome = Outcome::default();
    for path in paths {
        lint_path(path, binary, &mut outcome)?;
    }
    Ok(outcome)
}

fn is_kustomization(dir: &Path) -> bool {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"].iter().any(|f| dir.join(f).is_file())
}

fn is_cookbook(dir: &Path) -> bool {
    dir.join("metadata.rb").is_file() && dir.join("templates").is_dir()
}

fn lint_path(path: &Path, binary: &Binary<'_>, outcome: &mut Outcome) -> Result<(), LintError> {
    let shown = path.display().to_string();
    if shown == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| LintError::Read { path: "stdin".into(), cause: e.to_string() })?;
        outcome.add("<stdin>".into(), lint_manifests("<stdin>", &text, binary));
        return Ok(());
    }
    if path.is_file() {
        let text =
            std::fs::read_to_string(path).map_err(|e| LintError::Read { path: shown.clone(), cause: e.to_string() })?;
        let lint = lint_manifests(&shown, &text, binary);
        outcome.add(shown, lint);
        return Ok(());
    }
    if !path.is_dir() {
        return Err(LintError::Missing(shown));
    }
    if is_kustomization(path) {
        let lint = lint_manifests(&shown, &render(path)?, binary);
        outcome.add(shown, lint);
        return Ok(());
    }
    if is_cookbook(path) {
        outcome.findings.extend(lint_cookbook(&read_cookbook(path)?, None, binary));
        outcome.checked.push(shown);
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
        return Err(LintError::Unrecognised(shown));
    }
    let mut longest = None;
    for dir in dirs {
        let name = dir.display().to_string();
        let lint = lint_manifests(&name, &render(&dir)?, binary);
        longest = LongestStep::max(longest, lint.longest_step.clone());
        outcome.add(name, lint);
    }
    for dir in cookbooks {
        outcome.findings.extend(lint_cookbook(&read_cookbook(&dir)?, longest.as_ref(), binary));
        outcome.checked.push(dir.display().to_string());
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

/// Renders a Kustomize directory with `kubectl kustomize` (or `kustomize build`).
fn render(dir: &Path) -> Result<String, LintError> {
    let shown = dir.display().to_string();
    let attempts: [(&str, &[&str]); 2] = [("kubectl", &["kustomize"]), ("kustomize", &["build"])];
    for (tool, args) in attempts {
        let output = match std::process::Command::new(tool).args(args).arg(dir).output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LintError::Spawn { tool: tool.into(), dir: shown, cause: e.to_string() }),
        };
        if !output.status.success() {
            return Err(LintError::Render {
                command: format!("{tool} {} {shown}", args.join(" ")),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        return String::from_utf8(output.stdout).map_err(|_| LintError::NotUtf8 { tool: tool.into(), dir: shown });
    }
    Err(LintError::NoRenderer(shown))
}

/// The last segment of a path or image reference.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
