//! The fleet view: every instance's last heartbeat, per service, and the
//! verdict they add up to at a given `now` — `converged`, `rolling`,
//! `drifted` or `empty` — with the instances and parts that differ, and the
//! set of fingerprints that conform (what `enforce` stamps on commands).
//!
//! Pure: the caller passes heartbeats and `now`; nothing here reads a clock,
//! a file or a queue. The orchestrator owns one view and feeds it.
//!
//! The rules, in the order they apply to a service's *live* instances
//! (heard from within `stale_after_missed` heartbeat intervals):
//! 1. none: `empty`.
//! 2. any instance not matching the declared expectation: `drifted`.
//! 3. one fingerprint: `converged`.
//! 4. two fingerprints, the newer one started more than one heartbeat
//!    interval after the older (a replacement, not a fleet started divergent)
//!    and less than `rolloutWindow` ago: `rolling`.
//! 5. otherwise (two past the window or started together, or more than two):
//!    `drifted`.
//!
//! A fingerprint's age (`since`) is the earliest `started_at` its instances
//! reported, so an orchestrator that restarts mid-rollout still tells the old
//! build from the new one. Conforming fingerprints: those matching the
//! expectation (all, without one); if that leaves more than one and they are
//! not `rolling`, only the reference — the one on most instances, ties going
//! to the newer (where a rollout is heading).
//!
//! Configuration values are kept only as short hashes per key: enough to name
//! the keys that differ, never a value (secrets are hashed upstream already).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqsaga_core::Millis;
use sqsaga_core::duration::format_duration;
use sqsaga_protocol::Heartbeat;

use crate::fingerprint::FingerprintParts;
use crate::policy::{Expectation, FleetPolicy, Mode};

/// How the view judges time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetOptions {
    /// The workers' heartbeat interval (`SQSAGA_HEARTBEAT_INTERVAL`): the unit
    /// of staleness, and the gap that tells a rollout from a fleet started
    /// divergent.
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which an instance is `stale`: shown, but no
    /// longer counted in the verdict (it is probably gone).
    pub stale_after_missed: u32,
    /// Missed heartbeats after which a stale instance is forgotten.
    pub drop_after_missed: u32,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions { heartbeat_interval: Duration::from_secs(10), stale_after_missed: 3, drop_after_missed: 10 }
    }
}

impl FleetOptions {
    fn stale_after(&self) -> Millis {
        millis(self.heartbeat_interval).saturating_mul(u64::from(self.stale_after_missed.max(1)))
    }

    fn drop_after(&self) -> Millis {
        millis(self.heartbeat_interval).saturating_mul(u64::from(self.drop_after_missed.max(self.stale_after_missed)))
    }
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a service's fleet looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// One fingerprint, matching the expectation if there is one.
    Converged,
    /// Two fingerprints inside the rollout window.
    Rolling,
    /// Anything else: see the reasons.
    Drifted,
    /// No live instance.
    Empty,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Converged => "converged",
            Verdict::Rolling => "rolling",
            Verdict::Drifted => "drifted",
            Verdict::Empty => "empty",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fingerprint's parts as the view keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsSummary {
    pub version: String,
    pub git_sha: String,
    pub executable_sha256: String,
    pub config_hash: String,
    pub contracts: Vec<String>,
    /// Configuration key → first 12 hex digits of the sha256 of its value:
    /// names the keys that differ without ever holding a value.
    pub config: BTreeMap<String, String>,
}

impl PartsSummary {
    /// Reads a heartbeat's `parts`; `None` if they are not fingerprint parts.
    pub fn from_value(parts: &Value) -> Option<PartsSummary> {
        let p: FingerprintParts = serde_json::from_value(parts.clone()).ok()?;
        Some(PartsSummary::from_parts(&p))
    }

    pub fn from_parts(p: &FingerprintParts) -> PartsSummary {
        let config = p
            .config
            .iter()
            .map(|(k, v)| {
                let digest = Sha256::digest(serde_json::to_string(v).unwrap_or_default().as_bytes());
                (k.clone(), hex::encode(digest)[..12].to_string())
            })
            .collect();
        let mut contracts = p.contracts.clone();
        contracts.sort();
        PartsSummary {
            version: p.version.clone(),
            git_sha: p.git_sha.clone(),
            executable_sha256: p.executable_sha256.clone(),
            config_hash: p.config_hash.clone(),
            contracts,
            config,
        }
    }

    fn matches(&self, e: &Expectation) -> bool {
        e.version.as_ref().is_none_or(|v| *v == self.version) && e.contracts.iter().all(|c| self.contracts.contains(c))
    }
}

/// One part that differs between an instance and what it is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub instance: String,
    pub fingerprint: String,
    /// `version`, `git_sha`, `executable_sha256`, `config_hash`, `contracts`
    /// or `parts` (unreadable).
    pub part: String,
    /// What differs: the configuration keys, the two versions, the missing contracts.
    pub detail: String,
    /// `fingerprint <id>` (the reference) or `expectation` (fleet.yaml).
    pub against: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} differs on {}: {}", self.part, self.instance, self.detail)?;
        if self.against == "expectation" {
            f.write_str(" (declared expectation)")?;
        }
        Ok(())
    }
}

/// One fingerprint of a service and who runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintGroup {
    pub fingerprint: String,
    /// Live instances running it.
    pub instances: Vec<String>,
    /// Stale instances last seen running it.
    #[serde(default)]
    pub stale: Vec<String>,
    /// Earliest start of any of its instances (or first heartbeat).
    pub since: Millis,
    /// Whether it is in the conforming set.
    pub conforming: bool,
    /// Matches the declared expectation (true without one).
    pub expected: bool,
    /// `None` when its heartbeats carried unreadable parts.
    pub parts: Option<PartsSummary>,
}

/// One instance as last heard from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub instance: String,
    pub host: String,
    pub fingerprint: String,
    pub in_flight: u32,
    pub started_at: Millis,
    /// Its last heartbeat's own timestamp.
    pub sent_at: Millis,
    /// When the view first heard from it with this fingerprint.
    pub first_seen: Millis,
    /// When the view last heard from it.
    pub last_seen: Millis,
    pub stale: bool,
    /// Reported by the worker: it refuses commands that exclude it.
    pub quarantined: bool,
    pub conforming: bool,
}

/// One service's view at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub service: String,
    pub mode: Mode,
    pub verdict: Verdict,
    /// From the policy, as written (`10m`).
    pub rollout_window: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expectation>,
    pub fingerprints: Vec<FingerprintGroup>,
    /// Fingerprints that conform; what `enforce` stamps on commands.
    pub conforming: Vec<String>,
    /// The fingerprint others are compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub differences: Vec<Difference>,
    /// The verdict in sentences, then every difference.
    pub reasons: Vec<String>,
    pub instances: Vec<InstanceView>,
    pub quarantined: Vec<String>,
    pub stale: Vec<String>,
    /// Contracts saga steps need that no eligible instance implements.
    pub missing_contracts: Vec<String>,
    /// Set when commands of this service have no eligible worker: they wait
    /// (or time out), and the orchestrator says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

impl ServiceView {
    /// Live instances counted in the verdict.
    pub fn live(&self) -> impl Iterator<Item = &InstanceView> {
        self.instances.iter().filter(|i| !i.stale)
    }

    /// The conforming set to stamp on a command needing `contract`: `None`
    /// in `observe` mode or while no instance is known (nobody to exclude
    /// yet); otherwise the conforming fingerprints implementing `contract`
    /// (possibly none: then the command waits, and `blocked` says why).
    pub fn stamp(&self, contract: &str) -> Option<Vec<String>> {
        if self.mode != Mode::Enforce || self.live().next().is_none() {
            return None;
        }
        let set = self
            .fingerprints
            .iter()
            .filter(|g| g.conforming)
            .filter(|g| g.parts.as_ref().is_none_or(|p| p.contracts.iter().any(|c| c == contract)))
            .map(|g| g.fingerprint.clone())
            .collect();
        Some(set)
    }

    /// Whether a step run by `fingerprint` counts as run by a non-conforming
    /// worker: the view knows the service and the fingerprint is not in the set.
    pub fn is_nonconforming(&self, fingerprint: &str) -> bool {
        self.live().next().is_some() && !self.conforming.iter().any(|f| f == fingerprint)
    }
}

/// Every service's view at a moment; what `GET /fleet` returns and
/// `sqsaga fleet` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSnapshot {
    /// The `now` it was computed at.
    pub at: Millis,
    pub heartbeat_interval_ms: u64,
    pub services: Vec<ServiceView>,
}

impl FleetSnapshot {
    pub fn service(&self, name: &str) -> Option<&ServiceView> {
        self.services.iter().find(|s| s.service == name)
    }
}

/// What the view remembers of one instance.
#[derive(Debug, Clone)]
struct Instance {
    host: String,
    fingerprint: String,
    parts: Option<PartsSummary>,
    in_flight: u32,
    started_at: Millis,
    sent_at: Millis,
    first_seen: Millis,
    last_seen: Millis,
    quarantined: bool,
}

#[derive(Debug, Clone, Default)]
struct ServiceState {
    /// By instance id.
    instances: BTreeMap<String, Instance>,
    /// Fingerprint → earliest start seen.
    since: BTreeMap<String, Millis>,
}

/// The fleet view of one orchestrator.
#[derive(Debug, Clone)]
pub struct FleetView {
    policy: FleetPolicy,
    options: FleetOptions,
    services: BTreeMap<String, ServiceState>,
    /// Service → contracts its saga steps need.
    required: BTreeMap<String, BTreeSet<String>>,
}

impl FleetView {
    pub fn new(policy: FleetPolicy, options: FleetOptions) -> FleetView {
        FleetView { policy, options, services: BTreeMap::new(), required: BTreeMap::new() }
    }

    pub fn policy(&self) -> &FleetPolicy {
        &self.policy
    }

    pub fn options(&self) -> &FleetOptions {
        &self.options
    }

    /// Declares that a saga step of `service` needs `contract`; the service
    /// is listed (as `empty` until heard from) and the contract checked.
    pub fn require(&mut self, service: &str, contract: &str) {
        self.required.entry(service.to_string()).or_default().insert(contract.to_string());
        self.services.entry(service.to_string()).or_default();
    }

    /// Records a heartbeat received at `now`. An older heartbeat than the
    /// instance's last one (reordered delivery) is ignored.
    pub fn observe(&mut self, hb: &Heartbeat, now: Millis) {
        let state = self.services.entry(hb.service.clone()).or_default();
        let previous = state.instances.get(&hb.instance);
        if previous.is_some_and(|p| p.sent_at > hb.sent_at) {
            return;
        }
        let first_seen = match previous {
            Some(p) if p.fingerprint == hb.fingerprint => p.first_seen,
            _ => now,
        };
        let started = hb.started_at.min(now);
        let since = state.since.entry(hb.fingerprint.clone()).or_insert(started);
        *since = (*since).min(started);
        state.instances.insert(
            hb.instance.clone(),
            Instance {
                host: hb.host.clone(),
                fingerprint: hb.fingerprint.clone(),
                parts: PartsSummary::from_value(&hb.parts),
                in_flight: hb.in_flight,
                started_at: hb.started_at,
                sent_at: hb.sent_at,
                first_seen,
                last_seen: now,
                quarantined: hb.quarantined,
            },
        );
        forget_unused(state);
    }

    /// Forgets instances silent for `drop_after_missed` intervals, and
    /// fingerprints nobody runs any more.
    pub fn expire(&mut self, now: Millis) {
        let drop_after = self.options.drop_after();
        for state in self.services.values_mut() {
            state.instances.retain(|_, i| now.saturating_sub(i.last_seen) <= drop_after);
            forget_unused(state);
        }
    }

    /// Every known service (heard from, required by a saga or named by the
    /// policy), judged at `now`.
    pub fn snapshot(&self, now: Millis) -> FleetSnapshot {
        let mut names: BTreeSet<&String> = self.services.keys().collect();
        names.extend(self.policy.services.keys());
        FleetSnapshot {
            at: now,
            heartbeat_interval_ms: millis(self.options.heartbeat_interval),
            services: names.into_iter().map(|n| self.service(n, now)).collect(),
        }
    }

    /// One service judged at `now`.
    pub fn service(&self, name: &str, now: Millis) -> ServiceView {
        let empty = ServiceState::default();
        let state = self.services.get(name).unwrap_or(&empty);
        let policy = self.policy.for_service(name);
        let required = self.required.get(name).cloned().unwrap_or_default();
        judge(name, state, policy, &required, &self.options, now)
    }

    /// Restores what a previous run saw (its persisted snapshot), so a
    /// restarted orchestrator keeps judging — and stamping — at once.
    /// Instances keep their `last_seen`: those silent too long are stale.
    pub fn restore(&mut self, snapshot: &FleetSnapshot) {
        for s in &snapshot.services {
            let state = self.services.entry(s.service.clone()).or_default();
            for i in &s.instances {
                if state.instances.contains_key(&i.instance) {
                    continue;
                }
                let group = s.fingerprints.iter().find(|g| g.fingerprint == i.fingerprint);
                let since = group.map_or(i.started_at, |g| g.since);
                let entry = state.since.entry(i.fingerprint.clone()).or_insert(since);
                *entry = (*entry).min(since);
                state.instances.insert(
                    i.instance.clone(),
                    Instance {
                        host: i.host.clone(),
                        fingerprint: i.fingerprint.clone(),
                        parts: group.and_then(|g| g.parts.clone()),
                        in_flight: i.in_flight,
                        started_at: i.started_at,
                        sent_at: i.sent_at,
                        first_seen: i.first_seen,
                        last_seen: i.last_seen,
                        quarantined: i.quarantined,
                    },
                );
            }
        }
    }
}

fn forget_unused(state: &mut ServiceState) {
    let used: BTreeSet<&String> = state.instances.values().map(|i| &i.fingerprint).collect();
    state.since.retain(|fp, _| used.contains(fp));
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}

/// The instances of one fingerprint, as `judge` sorts them.
#[derive(Default)]
struct Group<'a> {
    live: Vec<&'a str>,
    stale: Vec<&'a str>,
    /// From the first instance whose heartbeat had readable parts.
    parts: Option<&'a PartsSummary>,
}

/// The verdict, conforming set, differences and reasons of one service.
fn judge(
    name: &str,
    state: &ServiceState,
    policy: &crate::policy::ServicePolicy,
    required: &BTreeSet<String>,
    options: &FleetOptions,
    now: Millis,
) -> ServiceView {
    let stale_after = options.stale_after();
    let interval = millis(options.heartbeat_interval);
    let window = millis(policy.rollout_window);
    let is_live = |i: &Instance| now.saturating_sub(i.last_seen) <= stale_after;
    let expected = |parts: Option<&PartsSummary>| match &policy.expect {
        None => true,
        Some(e) => parts.is_some_and(|p| p.matches(e)),
    };

    // Live instances per fingerprint, with the fingerprint's parts and age.
    let mut groups: BTreeMap<&str, Group<'_>> = BTreeMap::new();
    for (id, i) in &state.instances {
        let g = groups.entry(i.fingerprint.as_str()).or_default();
        if is_live(i) {
            g.live.push(id.as_str());
        } else {
            g.stale.push(id.as_str());
        }
        if g.parts.is_none() {
            g.parts = i.parts.as_ref();
        }
    }
    let since = |fp: &str| state.since.get(fp).copied().unwrap_or(now);
    let live_fps: Vec<&str> = groups.iter().filter(|(_, g)| !g.live.is_empty()).map(|(fp, _)| *fp).collect();
    let candidates: Vec<&str> = live_fps.iter().copied().filter(|fp| expected(groups[fp].parts)).collect();

    // Two fingerprints are a rollout if the newer started clearly after the
    // older (more than one heartbeat interval: instances started together
    // are a divergent fleet) and less than the window ago.
    let rolling_pair = |fps: &[&str]| -> Option<(bool, Millis, Millis)> {
        let [a, b] = fps else { return None };
        let (older, newer) = if since(a) <= since(b) { (since(a), since(b)) } else { (since(b), since(a)) };
        let ordered = newer.saturating_sub(older) > interval;
        let age = now.saturating_sub(newer);
        Some((ordered && age <= window, age, newer.saturating_sub(older)))
    };

    // The reference: most live instances; ties to the newer, then by id.
    let pool = if candidates.is_empty() { &live_fps } else { &candidates };
    let reference: Option<&str> = pool
        .iter()
        .copied()
        .max_by(|a, b| (groups[a].live.len(), since(a), *b).cmp(&(groups[b].live.len(), since(b), *a)));

    let conforming: Vec<&str> = match candidates.len() {
        0 | 1 => candidates.clone(),
        2 if rolling_pair(&candidates).is_some_and(|r| r.0) => candidates.clone(),
        _ => reference.into_iter().collect(),
    };

    // Verdict and its sentences.
    let mut reasons = Vec::new();
    let unexpected: Vec<&str> = live_fps.iter().copied().filter(|fp| !expected(groups[fp].parts)).collect();
    let live_count: usize = live_fps.iter().map(|fp| groups[fp].live.len()).sum();
    let verdict = if live_fps.is_empty() {
        reasons.push("no live instance".to_string());
        Verdict::Empty
    } else if !unexpected.is_empty() {
        let names: Vec<&str> = unexpected.iter().flat_map(|fp| groups[fp].live.iter().copied()).collect();
        reasons.push(format!("{} do(es) not match the declared expectation", names.join(", ")));
        Verdict::Drifted
    } else if live_fps.len() == 1 {
        reasons.push(format!("1 fingerprint on {live_count} instance(s)"));
        Verdict::Converged
    } else if let Some((rolling, age, gap)) = rolling_pair(&live_fps) {
        let age_text = format_duration(Duration::from_millis(age / 1000 * 1000));
        let window_text = format_duration(policy.rollout_window);
        if rolling {
            reasons
                .push(format!("2 fingerprints, the newer since {age_text}, inside the {window_text} rollout window"));
            Verdict::Rolling
        } else if gap <= interval {
            reasons.push(
                "2 fingerprints whose instances started together (within one heartbeat interval): not a rollout"
                    .to_string(),
            );
            Verdict::Drifted
        } else {
            reasons.push(format!("2 fingerprints for {age_text}, past the {window_text} rollout window"));
            Verdict::Drifted
        }
    } else {
        reasons.push(format!("{} fingerprints (a rollout has at most 2)", live_fps.len()));
        Verdict::Drifted
    };

    // What differs: every live instance off the reference, and every one
    // off the expectation.
    let mut differences = Vec::new();
    if let Some(r) = reference {
        let ref_parts = groups[r].parts;
        for (fp, Group { live, parts, .. }) in &groups {
            if *fp == r || live.is_empty() {
                continue;
            }
            for instance in live {
                for (part, detail) in diff(*parts, ref_parts) {
                    differences.push(Difference {
                        instance: instance.to_string(),
                        fingerprint: fp.to_string(),
                        part,
                        detail,
                        against: format!("fingerprint {}", short(r)),
                    });
                }
            }
        }
    }
    if let Some(e) = &policy.expect {
        for fp in &unexpected {
            let Group { live, parts, .. } = &groups[fp];
            for instance in live {
                for (part, detail) in diff_expectation(*parts, e) {
                    differences.push(Difference {
                        instance: instance.to_string(),
                        fingerprint: fp.to_string(),
                        part,
                        detail,
                        against: "expectation".to_string(),
                    });
                }
            }
        }
    }
    differences.sort_by(|a, b| (&a.instance, &a.against, &a.part).cmp(&(&b.instance, &b.against, &b.part)));
    reasons.extend(differences.iter().map(ToString::to_string));

    // Can every command of the service find a worker?
    let eligible: Vec<&str> = if policy.mode == Mode::Enforce { conforming.clone() } else { live_fps.clone() };
    let mut missing_contracts: Vec<String> = Vec::new();
    let mut blocked = None;
    if !live_fps.is_empty() {
        missing_contracts = required
            .iter()
            .filter(|c| !eligible.iter().any(|fp| groups[fp].parts.is_none_or(|p| p.contracts.contains(c))))
            .cloned()
            .collect();
        if policy.mode == Mode::Enforce && conforming.is_empty() {
            blocked = Some(format!(
                "no instance of {name} conforms: its commands wait for a conforming worker or their step timeout"
            ));
        } else if !missing_contracts.is_empty() {
            blocked = Some(format!(
                "no {} instance of {name} implements {}: commands needing it wait for one or their step timeout",
                if policy.mode == Mode::Enforce { "conforming" } else { "live" },
                missing_contracts.join(", ")
            ));
        }
    }
    if let Some(b) = &blocked {
        reasons.push(b.clone());
    }

    let is_conforming = |fp: &str| conforming.contains(&fp);
    let fingerprints = groups
        .iter()
        .map(|(fp, Group { live, stale, parts })| FingerprintGroup {
            fingerprint: fp.to_string(),
            instances: live.iter().map(|s| s.to_string()).collect(),
            stale: stale.iter().map(|s| s.to_string()).collect(),
            since: since(fp),
            conforming: is_conforming(fp),
            expected: expected(*parts),
            parts: parts.cloned(),
        })
        .collect();
    let instances: Vec<InstanceView> = state
        .instances
        .iter()
        .map(|(id, i)| InstanceView {
            instance: id.clone(),
            host: i.host.clone(),
            fingerprint: i.fingerprint.clone(),
            in_flight: i.in_flight,
            started_at: i.started_at,
            sent_at: i.sent_at,
            first_seen: i.first_seen,
            last_seen: i.last_seen,
            stale: !is_live(i),
            quarantined: i.quarantined,
            conforming: is_conforming(&i.fingerprint),
        })
        .collect();
    ServiceView {
        service: name.to_string(),
        mode: policy.mode,
        verdict,
        rollout_window: format_duration(policy.rollout_window),
        expect: policy.expect.clone(),
        fingerprints,
        conforming: conforming.iter().map(|s| s.to_string()).collect(),
        reference: reference.map(str::to_string),
        differences,
        reasons,
        quarantined: instances.iter().filter(|i| i.quarantined && !i.stale).map(|i| i.instance.clone()).collect(),
        stale: instances.iter().filter(|i| i.stale).map(|i| i.instance.clone()).collect(),
        instances,
        missing_contracts,
        blocked,
    }
}

/// The parts of `a` that differ from `b`, with what differs.
fn diff(a: Option<&PartsSummary>, b: Option<&PartsSummary>) -> Vec<(String, String)> {
    let (Some(a), Some(b)) = (a, b) else {
        return vec![("parts".to_string(), "unreadable fingerprint parts in its heartbeat".to_string())];
    };
    let mut out = Vec::new();
    if a.version != b.version {
        out.push(("version".to_string(), format!("{} (reference {})", a.version, b.version)));
    }
    if a.git_sha != b.git_sha {
        out.push(("git_sha".to_string(), format!("{} (reference {})", short(&a.git_sha), short(&b.git_sha))));
    }
    if a.executable_sha256 != b.executable_sha256 {
        let detail = if a.version == b.version && a.git_sha == b.git_sha {
            format!(
                "{} (reference {}) under the same version {} and git sha",
                short(&a.executable_sha256),
                short(&b.executable_sha256),
                a.version
            )
        } else {
            format!("{} (reference {})", short(&a.executable_sha256), short(&b.executable_sha256))
        };
        out.push(("executable_sha256".to_string(), detail));
    }
    if a.config_hash != b.config_hash {
        let keys: BTreeSet<&String> = a.config.keys().chain(b.config.keys()).collect();
        let differing: Vec<&str> =
            keys.into_iter().filter(|k| a.config.get(*k) != b.config.get(*k)).map(String::as_str).collect();
        let detail = if differing.is_empty() { "(keys unknown)".to_string() } else { differing.join(", ") };
        out.push(("config_hash".to_string(), detail));
    }
    if a.contracts != b.contracts {
        out.push(("contracts".to_string(), contract_diff(&a.contracts, &b.contracts)));
    }
    out
}

fn contract_diff(have: &[String], want: &[String]) -> String {
    let missing: Vec<&str> = want.iter().filter(|c| !have.contains(c)).map(String::as_str).collect();
    let extra: Vec<&str> = have.iter().filter(|c| !want.contains(c)).map(String::as_str).collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("lacks {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("also implements {}", extra.join(", ")));
    }
    parts.join("; ")
}

fn diff_expectation(a: Option<&PartsSummary>, e: &Expectation) -> Vec<(String, String)> {
    let Some(a) = a else {
        return vec![("parts".to_string(), "unreadable fingerprint parts in its heartbeat".to_string())];
    };
    let mut out = Vec::new();
    if let Some(v) = e.version.as_ref().filter(|v| **v != a.version) {
        out.push(("version".to_string(), format!("{}, expected {v}", a.version)));
    }
    let missing: Vec<&str> = e.contracts.iter().filter(|c| !a.contracts.contains(c)).map(String::as_str).collect();
    if !missing.is_empty() {
        out.push(("contracts".to_string(), format!("lacks {}", missing.join(", "))));
    }
    out
}
