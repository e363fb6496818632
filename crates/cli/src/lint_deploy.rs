//! `sqsaga lint-deploy PATH...`: the checks live in `sqsaga-lint-deploy`;
//! this module describes the binary to them (its services, its built-in
//! saga, its own clap parser) and prints what they find.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser};
use sqsaga_lint_deploy::{Binary, Invocation, Role, lint_paths};

/// Arguments of `sqsaga lint-deploy`.
#[derive(Debug, Clone, Args)]
pub struct LintArgs {
    /// Rendered manifests (multi-document YAML; `-` reads stdin), Kustomize
    /// directories (rendered with `kubectl kustomize`), Chef cookbooks, or a
    /// deploy/ root (k8s/base, every k8s/overlays/*, every chef/cookbooks/*).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Prints each finding as `file: path: message` and a summary; exit 1 on any error.
pub fn run(args: LintArgs) -> Result<ExitCode> {
    let binary = Binary {
        services: &sqsaga_order::SERVICES,
        builtin_definition: sqsaga_order::ORDER_SAGA,
        parse_command_line: &parse_invocation,
    };
    let outcome = lint_paths(&args.paths, &binary)?;
    for f in &outcome.findings {
        println!("{f}");
    }
    if outcome.errors() > 0 {
        println!("lint-deploy: FAILED: {}", outcome.summary());
        Ok(ExitCode::from(1))
    } else {
        println!("lint-deploy: ok: {}", outcome.summary());
        Ok(ExitCode::SUCCESS)
    }
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
    Ok(match cli.command {
        crate::Command::Orchestrator(a) => {
            Invocation { role: Role::Orchestrator, service: None, data_dir: a.config.data_dir, config: a.config.config }
        }
        crate::Command::Worker(a) => {
            Invocation { role: Role::Worker, service: a.service, data_dir: a.config.data_dir, config: a.config.config }
        }
        _ => Invocation {
            role: Role::Other(args.first().cloned().unwrap_or_default()),
            service: None,
            data_dir: None,
            config: None,
        },
    })
}
