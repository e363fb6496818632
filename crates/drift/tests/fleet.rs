//! The fleet view, by table: heartbeats in (who, which build, started when,
//! heard when), a `now`, and the verdict, conforming instances and reasons out.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sqsaga_core::Millis;
use sqsaga_drift::{Fingerprint, FingerprintParts, FleetOptions, FleetPolicy, FleetView, Mode, ServiceView, Verdict};
use sqsaga_protocol::Heartbeat;

/// What a test instance runs.
#[derive(Clone, Copy)]
struct Build {
    version: &'static str,
    exe: &'static str,
    log_level: &'static str,
    contracts: &'static [&'static str],
}

const V1: Build = Build { version: "0.1.0", exe: "e1", log_level: "info", contracts: &["inventory/v1"] };

fn fingerprint(b: Build) -> Fingerprint {
    let config: BTreeMap<String, serde_json::Value> = [("log_level", json!(b.log_level)), ("concurrency", json!(4))]
        .into_iter()
        .map(|(k, v)| (k.into(), v))
        .collect();
    Fingerprint::new(FingerprintParts {
        version: b.version.into(),
        git_sha: "abc".into(),
        executable_sha256: b.exe.into(),
        config_hash: format!("cfg-{}", b.log_level.len()),
        contracts: b.contracts.iter().map(|c| c.to_string()).collect(),
        config,
    })
}

/// One heartbeat: instance, build, its start, when the view received it.
struct Beat {
    instance: &'static str,
    build: Build,
    started: Millis,
    at: Millis,
}

fn beat(instance: &'static str, build: Build, started: Millis, at: Millis) -> Beat {
    Beat { instance, build, started, at }
}

fn heartbeat(b: &Beat) -> Heartbeat {
    let fp = fingerprint(b.build);
    Heartbeat {
        service: "inventory".into(),
        instance: b.instance.into(),
        host: "host".into(),
        fingerprint: fp.id.clone(),
        parts: serde_json::to_value(&fp.parts).unwrap(),
        in_flight: 0,
        started_at: b.started,
        sent_at: b.at,
        quarantined: false,
    }
}

fn options() -> FleetOptions {
    FleetOptions { heartbeat_interval: Duration::from_secs(1), stale_after_missed: 3, drop_after_missed: 10 }
}

/// Feeds the beats to a view under `policy` and judges `inventory` at `now`.
fn judge(policy: &str, beats: &[Beat], now: Millis) -> ServiceView {
    let policy = FleetPolicy::parse(policy, Mode::Observe).unwrap();
    let mut view = FleetView::new(policy, options());
    view.require("inventory", "inventory/v1");
    for b in beats {
        view.observe(&heartbeat(b), b.at);
    }
    view.expire(now);
    view.service("inventory", now)
}

/// The instances whose fingerprint conforms.
fn conforming_instances(v: &ServiceView) -> Vec<String> {
    v.live().filter(|i| i.conforming).map(|i| i.instance.clone()).collect()
}

struct Case {
    name: &'static str,
    policy: &'static str,
    beats: Vec<Beat>,
    now: Millis,
    verdict: Verdict,
    conforming: &'static [&'static str],
    /// Each must appear in one of the reasons.
    reasons: &'static [&'static str],
}

/// `a` and `b` on V1 since 0, `c` on `third` since `third_started`; all
/// heard one second after `c` started.
fn fleet_of_three(third: Build, third_started: Millis) -> Vec<Beat> {
    let heard = third_started + 1_000;
    vec![beat("a", V1, 0, heard), beat("b", V1, 0, heard), beat("c", third, third_started, heard)]
}

#[test]
fn verdicts() {
    let debug = Build { log_level: "debug", ..V1 };
    let v2 = Build { version: "0.2.0", exe: "e2", ..V1 };
    let relabelled = Build { exe: "e-patched", ..V1 };
    let no_contract = Build { contracts: &[], ..V1 };
    let cases = vec![
        Case {
            name: "one fingerprint",
            policy: "",
            beats: fleet_of_three(V1, 0),
            now: 1_500,
            verdict: Verdict::Converged,
            conforming: &["a", "b", "c"],
            reasons: &["1 fingerprint on 3 instance(s)"],
        },
        Case {
            name: "one instance started with another log level, together with its siblings",
            policy: "",
            beats: fleet_of_three(debug, 200),
            now: 1_500,
            verdict: Verdict::Drifted,
            conforming: &["a", "b"],
            reasons: &["started together", "config_hash differs on c: log_level"],
        },
        Case {
            name: "a new build rolling in, inside the window",
            policy: "",
            beats: fleet_of_three(v2, 5_000),
            now: 6_500,
            verdict: Verdict::Rolling,
            conforming: &["a", "b", "c"],
            reasons: &["inside the 10m rollout window", "version differs on c: 0.2.0 (reference 0.1.0)"],
        },
        Case {
            name: "the same rollout, past its window",
            policy: "defaults: {rolloutWindow: 5s}",
            beats: vec![
                beat("a", V1, 0, 10_000),
                beat("b", V1, 0, 10_000),
                beat("c", v2, 5_000, 6_000),
                beat("c", v2, 5_000, 10_000),
            ],
            now: 10_500,
            verdict: Verdict::Drifted,
            conforming: &["a", "b"],
            reasons: &["past the 5s rollout window"],
        },
        Case {
            name: "three fingerprints",
            policy: "",
            beats: vec![beat("a", V1, 0, 7_000), beat("b", debug, 3_000, 7_000), beat("c", v2, 6_000, 7_000)],
            now: 7_500,
            verdict: Verdict::Drifted,
            conforming: &["c"],
            reasons: &["3 fingerprints (a rollout has at most 2)"],
        },
        Case {
            name: "same version, different executable",
            policy: "",
            beats: fleet_of_three(relabelled, 0),
            now: 1_500,
            verdict: Verdict::Drifted,
            conforming: &["a", "b"],
            reasons: &["executable_sha256 differs on c: e-patched (reference e1) under the same version 0.1.0"],
        },
        Case {
            name: "a worker lacking the contract a step needs",
            policy: "",
            beats: fleet_of_three(no_contract, 0),
            now: 1_500,
            verdict: Verdict::Drifted,
            conforming: &["a", "b"],
            reasons: &["contracts differs on c: lacks inventory/v1"],
        },
        Case {
            name: "a declared expectation decides, even for the minority",
            policy: "services: {inventory: {expect: {version: 0.2.0}}}",
            beats: fleet_of_three(v2, 5_000),
            now: 6_500,
            verdict: Verdict::Drifted,
            conforming: &["c"],
            reasons: &[
                "a, b do(es) not match the declared expectation",
                "version differs on a: 0.1.0, expected 0.2.0 (declared expectation)",
            ],
        },
        Case {
            name: "an instance silent for three intervals is stale and not counted",
            policy: "",
            beats: vec![beat("a", V1, 0, 5_000), beat("b", V1, 0, 5_000), beat("c", debug, 0, 1_000)],
            now: 5_000,
            verdict: Verdict::Converged,
            conforming: &["a", "b"],
            reasons: &["1 fingerprint on 2 instance(s)"],
        },
        Case {
            name: "ties go to the newer fingerprint",
            policy: "",
            beats: vec![beat("a", V1, 0, 1_000), beat("b", debug, 400, 1_400)],
            now: 1_500,
            verdict: Verdict::Drifted,
            conforming: &["b"],
            reasons: &["config_hash differs on a: log_level"],
        },
        Case {
            name: "a reordered, older heartbeat changes nothing",
            policy: "",
            beats: vec![beat("a", V1, 0, 2_000), beat("a", debug, 0, 1_000)],
            now: 2_500,
            verdict: Verdict::Converged,
            conforming: &["a"],
            reasons: &[],
        },
    ];
    for case in cases {
        let v = judge(case.policy, &case.beats, case.now);
        assert_eq!(v.verdict, case.verdict, "{}: {:#?}", case.name, v.reasons);
        assert_eq!(conforming_instances(&v), case.conforming, "{}: {:#?}", case.name, v.reasons);
        for r in case.reasons {
            assert!(
                v.reasons.iter().any(|x| x.contains(r)),
                "{}: no reason contains {r:?} in {:#?}",
                case.name,
                v.reasons
            );
        }
    }
}

#[test]
fn stale_instances_are_listed_then_dropped() {
    let beats = [beat("a", V1, 0, 12_000), beat("c", V1, 0, 1_000)];
    let v = judge("", &beats, 5_000);
    assert_eq!(v.stale, vec!["c"]);
    let v = judge("", &beats, 12_000);
    assert!(v.instances.iter().all(|i| i.instance != "c"), "dropped after 10 intervals: {:?}", v.instances);
}

#[test]
fn commands_are_stamped_only_in_enforce_mode_and_only_once_instances_are_known() {
    let debug = Build { log_level: "debug", ..V1 };
    let observe = judge("", &fleet_of_three(debug, 0), 1_500);
    assert_eq!(observe.stamp("inventory/v1"), None);
    let enforce = judge("defaults: {mode: enforce}", &fleet_of_three(debug, 0), 1_500);
    assert_eq!(enforce.stamp("inventory/v1"), Some(vec![fingerprint(V1).id]));
    assert!(enforce.blocked.is_none());
    let unknown = judge("defaults: {mode: enforce}", &[], 1_500);
    assert_eq!(unknown.verdict, Verdict::Empty);
    assert_eq!(unknown.stamp("inventory/v1"), None, "nobody to exclude yet");
}

#[test]
fn steps_by_nonconforming_workers_are_recognised() {
    let debug = Build { log_level: "debug", ..V1 };
    let v = judge("", &fleet_of_three(debug, 0), 1_500);
    assert!(v.is_nonconforming(&fingerprint(debug).id));
    assert!(!v.is_nonconforming(&fingerprint(V1).id));
    assert!(v.is_nonconforming("a-worker-that-never-sent-a-heartbeat"));
    assert!(!judge("", &[], 1_500).is_nonconforming("anything"), "an unknown service judges nobody");
}

#[test]
fn no_eligible_worker_is_said_out_loud() {
    // Enforce with an expectation nobody meets: every command waits.
    let v = judge("services: {inventory: {mode: enforce, expect: {version: 9.9.9}}}", &fleet_of_three(V1, 0), 1_500);
    assert_eq!(v.stamp("inventory/v1"), Some(vec![]));
    assert!(v.blocked.as_deref().is_some_and(|b| b.contains("no instance of inventory conforms")), "{v:#?}");

    // A contract that a step needs and no live instance implements.
    let policy = FleetPolicy::parse("", Mode::Observe).unwrap();
    let mut view = FleetView::new(policy, options());
    view.require("inventory", "inventory/v2");
    for b in fleet_of_three(V1, 0) {
        view.observe(&heartbeat(&b), b.at);
    }
    let v = view.service("inventory", 1_500);
    assert_eq!(v.missing_contracts, vec!["inventory/v2"]);
    assert!(v.blocked.as_deref().is_some_and(|b| b.contains("implements inventory/v2")), "{v:#?}");
}

#[test]
fn a_restored_snapshot_judges_the_same() {
    let debug = Build { log_level: "debug", ..V1 };
    let policy = FleetPolicy::parse("defaults: {mode: enforce}", Mode::Observe).unwrap();
    let mut view = FleetView::new(policy.clone(), options());
    for b in fleet_of_three(debug, 0) {
        view.observe(&heartbeat(&b), b.at);
    }
    let before = view.snapshot(1_500);
    let text = serde_json::to_string(&before).unwrap();
    let mut restored = FleetView::new(policy, options());
    restored.restore(&serde_json::from_str(&text).unwrap());
    assert_eq!(restored.snapshot(1_500), before);
}

#[test]
fn config_values_never_reach_the_view() {
    let b = Build { log_level: "super-secret-value", ..V1 };
    let v = judge("", &[beat("a", b, 0, 1_000)], 1_500);
    let text = serde_json::to_string(&v).unwrap();
    assert!(!text.contains("super-secret-value"), "{text}");
    assert!(text.contains("log_level"));
}
