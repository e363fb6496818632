//! The fleet view as a person reads it (`sqsaga fleet`): per service the
//! verdict, a table of fingerprints and what differs between them, each
//! instance with its flags, and why. Pure formatting of a [`FleetSnapshot`].

use std::collections::BTreeMap;

use sqsaga_drift::FleetSnapshot;

use crate::identity::short;

/// The human form of the fleet view.
pub fn render(snapshot: &FleetSnapshot, steps: &BTreeMap<String, u64>) -> String {
    let mut out = String::new();
    let at = snapshot.at;
    let ago = |t: u64| format!("{:.1}s ago", at.saturating_sub(t) as f64 / 1000.0);
    if snapshot.services.is_empty() {
        out.push_str("no service known yet (no saga definition loaded, no heartbeat received)\n");
    }
    for s in &snapshot.services {
        out.push_str(&format!(
            "{}: {} (mode {}, rollout window {}, {} live instance(s))\n",
            s.service,
            s.verdict.as_str().to_uppercase(),
            s.mode,
            s.rollout_window,
            s.live().count()
        ));
        if let Some(e) = &s.expect {
            out.push_str(&format!(
                "  expect     version {}, contracts {}\n",
                e.version.as_deref().unwrap_or("(any)"),
                if e.contracts.is_empty() { "(any)".to_string() } else { e.contracts.join(", ") }
            ));
        }
        if !s.fingerprints.is_empty() {
            out.push_str(&format!(
                "  {:<13} {:>9}  {:<10} {:<9} {:<8} {:<13} {:<13} {}\n",
                "FINGERPRINT", "INSTANCES", "CONFORMING", "VERSION", "GIT", "EXECUTABLE", "CONFIG", "CONTRACTS"
            ));
        }
        for g in &s.fingerprints {
            let (version, git, exe, config, contracts) = match &g.parts {
                Some(p) => (
                    p.version.as_str(),
                    &p.git_sha[..p.git_sha.len().min(8)],
                    short(&p.executable_sha256),
                    short(&p.config_hash),
                    p.contracts.join(","),
                ),
                None => ("?", "?", "?", "?", "?".to_string()),
            };
            let count = if g.stale.is_empty() {
                g.instances.len().to_string()
            } else {
                format!("{}+{} stale", g.instances.len(), g.stale.len())
            };
            out.push_str(&format!(
                "  {:<13} {:>9}  {:<10} {:<9} {:<8} {:<13} {:<13} {}\n",
                short(&g.fingerprint),
                count,
                if g.conforming { "yes" } else { "no" },
                version,
                git,
                exe,
                config,
                contracts
            ));
        }
        for i in &s.instances {
            let mut flags = Vec::new();
            if i.stale {
                flags.push("STALE");
            }
            if i.quarantined {
                flags.push("QUARANTINED");
            }
            if !i.conforming && !i.stale {
                flags.push("not conforming");
            }
            out.push_str(&format!(
                "  - {} [{}] on {}, {} in flight, last heartbeat {}{}\n",
                i.instance,
                short(&i.fingerprint),
                i.host,
                i.in_flight,
                ago(i.last_seen),
                if flags.is_empty() { String::new() } else { format!("  {}", flags.join(", ")) }
            ));
        }
        for r in &s.reasons {
            out.push_str(&format!("  why: {r}\n"));
        }
        if let Some(n) = steps.get(&s.service).filter(|n| **n > 0) {
            out.push_str(&format!("  steps run by non-conforming workers: {n}\n"));
        }
        if let Some(b) = &s.blocked {
            out.push_str(&format!("  NO ELIGIBLE WORKER: {b}\n"));
        }
    }
    out
}
