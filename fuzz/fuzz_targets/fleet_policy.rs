//! The drift guard's fleet policy parser (`fleet.yaml`,
//! `crates/drift/src/policy.rs`) on arbitrary text, under both default modes.
//!
//! Properties: no panic; problems at real `line:col` positions, each naming
//! its cause; an accepted policy, written back as YAML with every setting
//! explicit, parses to the same policy, and survives the JSON form the
//! fleet view is persisted in.
#![no_main]

use std::fmt::Write;

use libfuzzer_sys::fuzz_target;
use sqsaga_core::duration::format_duration;
use sqsaga_drift::{FleetPolicy, Mode, ServicePolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for mode in [Mode::Observe, Mode::Enforce] {
        match FleetPolicy::parse(text, mode) {
            Ok(policy) => {
                let written = to_yaml(&policy);
                // The other default mode: everything is explicit now.
                let other = if mode == Mode::Observe { Mode::Enforce } else { Mode::Observe };
                assert_eq!(FleetPolicy::parse(&written, other).as_ref(), Ok(&policy), "written back:\n{written}");
                let json = serde_json::to_string(&policy).expect("a policy serialises");
                let again: FleetPolicy = serde_json::from_str(&json).expect("its JSON reads back");
                assert_eq!(again, policy, "JSON round trip through {json}");
                for name in policy.services.keys() {
                    assert_eq!(policy.for_service(name), &policy.services[name]);
                }
            }
            Err(problems) => {
                assert!(!problems.is_empty());
                let lines = yaml_lines(text);
                for p in &problems {
                    assert!(p.line >= 1 && p.col >= 1 && p.line <= lines + 1, "{p:?} in {lines} lines");
                    assert!(p.message.len() > 10, "problem without a cause: {p:?}");
                }
            }
        }
    }
});

fn to_yaml(policy: &FleetPolicy) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "defaults:");
    let _ = writeln!(out, "  mode: {}", policy.defaults.mode);
    let _ = writeln!(out, "  rolloutWindow: {}", format_duration(policy.defaults.rollout_window));
    if policy.services.is_empty() {
        return out;
    }
    let _ = writeln!(out, "services:");
    for (name, service) in &policy.services {
        let _ = writeln!(out, "  {}:", q(name));
        write_service(&mut out, service);
    }
    out
}

fn write_service(out: &mut String, s: &ServicePolicy) {
    let _ = writeln!(out, "    mode: {}", s.mode);
    let _ = writeln!(out, "    rolloutWindow: {}", format_duration(s.rollout_window));
    if let Some(expect) = &s.expect {
        let _ = writeln!(out, "    expect:");
        if let Some(version) = &expect.version {
            let _ = writeln!(out, "      version: {}", q(version));
        }
        if !expect.contracts.is_empty() {
            let contracts: Vec<String> = expect.contracts.iter().map(|c| q(c)).collect();
            let _ = writeln!(out, "      contracts: [{}]", contracts.join(", "));
        }
    }
}

/// A JSON string is a YAML double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// Lines as YAML counts them: `\r\n`, `\r` and `\n` each end one.
fn yaml_lines(text: &str) -> usize {
    1 + text.replace("\r\n", "\n").chars().filter(|c| matches!(c, '\r' | '\n')).count()
}
