//! A stand-in for the sqsaga binary in unit tests: the real services and
//! built-in saga, and a small command-line parser with the binary's shape
//! (the real clap parser is the binary's; `crates/cli/tests/lint_deploy.rs`
//! runs lint-deploy with it).

use std::path::PathBuf;

use crate::{Binary, Invocation, Role};

/// The longest step of this saga is 10s, as in the order saga.
const BUILTIN: &str = "name: create_order\nversion: 1\ndeadline: 5m\nsteps:\n  \
    - {name: reserve, service: inventory, action: inventory.reserve, contract: inventory/v1, timeout: 10s}\n  \
    - {name: pay, service: payment, action: payment.charge, contract: payment/v1, timeout: 5s}\n";

fn parse(args: &[String]) -> Result<Invocation, String> {
    let (command, rest) = args.split_first().ok_or("a subcommand is required")?;
    let role = match command.as_str() {
        "orchestrator" => Role::Orchestrator,
        "worker" => Role::Worker,
        "demo" | "validate" => Role::Other(command.clone()),
        other => return Err(format!("unrecognized subcommand '{other}'")),
    };
    let mut inv = Invocation { role, service: None, data_dir: None, config: None };
    let mut words = rest.iter();
    while let Some(flag) = words.next() {
        let value = || words.clone().next().cloned().ok_or(format!("a value is required for '{flag}'"));
        match flag.as_str() {
            "--service" if inv.role == Role::Worker => inv.service = Some(value()?),
            "--data-dir" => inv.data_dir = Some(PathBuf::from(value()?)),
            "--config" => inv.config = Some(PathBuf::from(value()?)),
            other => return Err(format!("unexpected argument '{other}' found")),
        }
        words.next();
    }
    Ok(inv)
}

/// The test binary.
pub(crate) fn binary() -> Binary<'static> {
    Binary {
        services: &["inventory", "payment", "notification"],
        builtin_definition: BUILTIN,
        parse_command_line: &parse,
    }
}
