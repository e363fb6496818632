//! The drift guard, multi-process on the embedded backend: an orchestrator
//! and several workers of one binary sharing a data directory, heartbeats
//! every second, and the fleet view read over HTTP (`GET /fleet`) and through
//! `sqsaga fleet`.
//!
//! - observe: a worker started with another log level is reported `drifted`
//!   (naming it and the key) within two heartbeat intervals, and the steps it
//!   runs are counted;
//! - enforce: it runs no step, its `/readyz` is 503 with the reason, every
//!   saga finishes through its siblings, and it leaves quarantine by itself
//!   once it is the fleet;
//! - a rollout is `rolling` inside its window and `drifted` past it;
//! - a patched executable that kept its version is caught by its sha256;
//! - a worker lacking a step's contract never runs that step.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sqsaga");
/// The workers' heartbeat interval in every test (the minimum allowed).
const INTERVAL_MS: u64 = 1_000;
/// Sagas per run: enough command batches (the embedded queue hands out up to
/// ten at a time) that the odd worker out certainly receives some.
const ORDERS: usize = 150;

/// Each test runs about six processes; one at a time keeps a small machine
/// from turning timing assertions into load tests.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One process of the fleet and where its logs go.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    addr: Option<String>,
}

/// An orchestrator, its workers and their data dir; every child is killed
/// when the test ends, pass or fail.
struct Fleet {
    dir: tempfile::TempDir,
    policy: PathBuf,
    procs: Vec<Proc>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Fleet {
    /// A fresh data dir with `policy` as its fleet.yaml.
    fn new(policy: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("fleet.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        Fleet { dir, policy: policy_path, procs: Vec::new() }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `exe` (the binary under test unless given) as `name`. Every
    /// process gets the same configuration but its instance id, plus `env`.
    fn spawn(&mut self, name: &str, exe: Option<&Path>, args: &[&str], env: &[(&str, &str)]) {
        let log = self.data().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(exe.map_or(PathBuf::from(BIN), Path::to_path_buf));
        // Only what the test sets: cargo exports build-script variables
        // (`SQSAGA_GIT_SHA`) that the strict configuration would reject.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SQSAGA_")) {
            cmd.env_remove(k);
        }
        cmd.args(args)
            .arg("--data-dir")
            .arg(self.data())
            .env("SQSAGA_HTTP_ADDR", "127.0.0.1:0")
            .env("SQSAGA_HEARTBEAT_INTERVAL", format!("{INTERVAL_MS}ms"))
            .env("SQSAGA_FLEET_POLICY", &self.policy)
            .env("SQSAGA_WAIT_TIME", "1s")
            .env("SQSAGA_INSTANCE_ID", name)
            .env("LOG_LEVEL", "info")
            .env_remove("HOSTNAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.procs.push(Proc { name: name.to_string(), child, log, addr: None });
    }

    fn orchestrator(&mut self) {
        self.spawn("orchestrator", None, &["orchestrator"], &[]);
    }

    fn worker(&mut self, service: &str, instance: &str, env: &[(&str, &str)]) {
        self.spawn(instance, None, &["worker", "--service", service, "--failure-rate", "0"], env);
    }

    /// The order saga's three services: `inventory` × the names given (the
    /// ones with an env are the odd ones out), payment and notification.
    fn order_fleet(&mut self, inventory: &[(&str, &[(&str, &str)])]) {
        self.orchestrator();
        for (name, env) in inventory {
            self.worker("inventory", name, env);
        }
        self.worker("payment", "payment-1", &[]);
        self.worker("notification", "notification-1", &[]);
    }

    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).unwrap_or_else(|| panic!("no process {name}"))
    }

    /// The HTTP address `name` logged (`"HTTP listening."`), waiting for it.
    fn addr(&mut self, name: &str) -> String {
        let p = self.proc(name);
        if let Some(a) = &p.addr {
            return a.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let found = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find_map(|v| {
                (v["message"] == "HTTP listening.").then(|| v["addr"].as_str().map(str::to_string)).flatten()
            });
            if let Some(a) = found {
                p.addr = Some(a.clone());
                return a;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{name} exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "{name} never logged its HTTP address:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&mut self, name: &str, path: &str) -> (u16, String) {
        let addr = self.addr(name);
        http_get(&addr, path)
    }

    /// The orchestrator's fleet view.
    fn view(&mut self) -> Value {
        let (status, body) = self.get("orchestrator", "/fleet");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls the fleet view until `pred` holds on its `inventory` service.
    fn wait_inventory(&mut self, what: &str, budget: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + budget;
        loop {
            let view = self.view();
            if let Some(s) = inventory(&view)
                && pred(s)
            {
                return view;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last view:\n{view:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One sample of `metric` with `labels` (e.g. `service="inventory"`) from `name`'s /metrics.
    fn metric(&mut self, name: &str, metric: &str, labels: &str) -> f64 {
        let (_, body) = self.get(name, "/metrics");
        let prefix = format!("{metric}{{{labels}}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {name}'s metrics:\n{body}"))
    }

    /// Runs the binary to completion with the data dir, returning stdout.
    fn run(&self, args: &[&str]) -> String {
        let data = self.data().display().to_string();
        run(&[args, &["--data-dir", &data]].concat())
    }

    /// `demo load`, then `demo check` until every saga finished: the summary.
    fn run_orders(&self, orders: usize) -> Value {
        self.run(&["demo", "load", "--orders", &orders.to_string(), "--seed", "5"]);
        let stdout = self.run(&["demo", "check", "--wait", "120", "--json"]);
        let last = stdout.lines().last().unwrap_or_default();
        let summary: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
        assert_eq!(summary["unfinished"], 0, "{summary}");
        assert_eq!(summary["invariants_ok"], true, "{summary}");
        assert_eq!(summary["sagas"], orders, "{summary}");
        summary
    }
}

/// Runs the binary to completion, returning stdout.
fn run(args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SQSAGA_")) {
        cmd.env_remove(k);
    }
    let out = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare HTTP/1.1 GET against the process's own port.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn inventory(view: &Value) -> Option<&Value> {
    view["services"].as_array()?.iter().find(|s| s["service"] == "inventory")
}

fn live_fingerprints(s: &Value) -> usize {
    s["fingerprints"]
        .as_array()
        .map_or(0, |g| g.iter().filter(|g| g["instances"].as_array().is_some_and(|i| !i.is_empty())).count())
}

fn live_instances(s: &Value) -> usize {
    s["instances"].as_array().map_or(0, |i| i.iter().filter(|i| i["stale"] == false).count())
}

/// The difference of `part` reported for `instance`, if any.
fn difference<'a>(s: &'a Value, instance: &str, part: &str) -> Option<&'a Value> {
    s["differences"].as_array()?.iter().find(|d| d["instance"] == instance && d["part"] == part)
}

fn instance<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["instances"].as_array()?.iter().find(|i| i["instance"] == name)
}

/// Waits for the verdict `drifted` naming `who`'s `part`, then checks it came
/// within two heartbeat intervals of `who`'s first heartbeat.
fn expect_drifted(fleet: &mut Fleet, who: &str, part: &str, detail: &str) -> Value {
    let view = fleet.wait_inventory("a drifted verdict", Duration::from_secs(60), |s| {
        s["verdict"] == "drifted" && live_instances(s) == 3 && difference(s, who, part).is_some()
    });
    let s = inventory(&view).unwrap();
    let d = difference(s, who, part).unwrap();
    assert!(d["detail"].as_str().unwrap().contains(detail), "{d}");
    let at = view["at"].as_u64().unwrap();
    let first_seen = instance(s, who).unwrap()["first_seen"].as_u64().unwrap();
    eprintln!("{who}: drifted verdict {} ms after its first heartbeat was received", at - first_seen);
    // Polled every 100 ms: allow that on top of the two intervals.
    assert!(at - first_seen <= 2 * INTERVAL_MS + 250, "verdict {} ms after its first heartbeat", at - first_seen);
    view
}

#[test]
fn observe_mode_reports_the_divergent_instance_and_counts_its_steps() {
    let _serial = serial();
    let mut fleet = Fleet::new("defaults: {mode: observe}\n");
    fleet.order_fleet(&[("inventory-1", &[]), ("inventory-2", &[]), ("inventory-debug", &[("LOG_LEVEL", "debug")])]);
    let view = expect_drifted(&mut fleet, "inventory-debug", "config_hash", "log_level");
    let s = inventory(&view).unwrap();
    assert_eq!(s["mode"], "observe");
    assert_eq!(live_fingerprints(s), 2);
    assert!(
        s["reasons"].as_array().unwrap().iter().any(|r| r == "config_hash differs on inventory-debug: log_level"),
        "{s:#}"
    );

    // `sqsaga fleet` shows the same, in words and as JSON.
    let url = format!("http://{}/fleet", fleet.addr("orchestrator"));
    let text = run(&["fleet", "--url", &url]);
    assert!(text.contains("inventory: DRIFTED (mode observe"), "{text}");
    assert!(text.contains("config_hash differs on inventory-debug: log_level"), "{text}");
    let json: Value = serde_json::from_str(run(&["fleet", "--url", &url, "--json"]).trim()).unwrap();
    assert_eq!(inventory(&json).unwrap()["verdict"], "drifted");

    // It keeps working in observe mode, and every step it runs is counted.
    fleet.run_orders(ORDERS);
    let ran = fleet.metric("inventory-debug", "sqsaga_messages_processed_total", r#"service="inventory""#);
    let counted = fleet.metric("orchestrator", "sqsaga_steps_by_nonconforming_worker_total", r#"service="inventory""#);
    assert!(ran > 0.0, "the drifted worker ran no step; the test proves nothing");
    assert_eq!(counted, ran, "every step by the drifted worker is counted, and only those");
    assert_eq!(fleet.metric("orchestrator", "sqsaga_fleet_drifted", r#"service="inventory""#), 1.0);
    assert_eq!(fleet.metric("orchestrator", "sqsaga_fleet_fingerprints", r#"service="inventory""#), 2.0);

    // The audit: `sagas show` names the worker and fingerprint of each step.
    let fp = instance(s, "inventory-debug").unwrap()["fingerprint"].as_str().unwrap().to_string();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fleet.data().join("demo.json")).unwrap()).unwrap();
    let shown = manifest["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| fleet.run(&["sagas", "show", s[0].as_str().unwrap()]))
        .find(|out| out.contains("inventory-debug"))
        .expect("some saga has a step run by the drifted worker");
    assert!(shown.contains(&format!("inventory-debug [{}]", &fp[..12])), "{shown}");
}

#[test]
fn enforce_mode_keeps_the_divergent_instance_idle_and_unready_until_it_conforms() {
    let _serial = serial();
    let mut fleet = Fleet::new("services:\n  inventory:\n    mode: enforce\n");
    fleet.order_fleet(&[("inventory-1", &[]), ("inventory-2", &[]), ("inventory-debug", &[("LOG_LEVEL", "debug")])]);
    let view = expect_drifted(&mut fleet, "inventory-debug", "config_hash", "log_level");
    let s = inventory(&view).unwrap();
    assert_eq!(s["mode"], "enforce");
    let good = instance(s, "inventory-1").unwrap()["fingerprint"].clone();
    assert_eq!(s["conforming"], serde_json::json!([good]));
    // Stamps written in the first interval after a worker's first heartbeat
    // do not quarantine it (they may predate the orchestrator knowing it).
    std::thread::sleep(Duration::from_millis(2 * INTERVAL_MS));

    fleet.run_orders(ORDERS);
    assert_eq!(fleet.metric("inventory-debug", "sqsaga_messages_processed_total", r#"service="inventory""#), 0.0);
    assert!(
        fleet.metric("inventory-debug", "sqsaga_commands_refused_nonconforming_total", r#"service="inventory""#) > 0.0
    );
    assert_eq!(
        fleet.metric("orchestrator", "sqsaga_steps_by_nonconforming_worker_total", r#"service="inventory""#),
        0.0
    );

    // Quarantined: /readyz says why, metrics and the fleet view say so.
    let (status, body) = fleet.get("inventory-debug", "/readyz");
    assert_eq!(status, 503, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "not_ready");
    assert!(ready["reasons"]["drift"].as_str().unwrap().contains("quarantined"), "{ready}");
    assert_eq!(fleet.metric("inventory-debug", "sqsaga_worker_quarantined", r#"service="inventory""#), 1.0);
    assert_eq!(fleet.get("inventory-1", "/readyz").0, 200);
    fleet.wait_inventory("the quarantine in the fleet view", Duration::from_secs(10), |s| {
        s["quarantined"] == serde_json::json!(["inventory-debug"])
    });

    // Its siblings go away: it is the fleet now, conforms, and leaves
    // quarantine by itself on the next command.
    for name in ["inventory-1", "inventory-2"] {
        let p = fleet.proc(name);
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }
    fleet.wait_inventory("the drifted worker to be the fleet", Duration::from_secs(20), |s| {
        s["verdict"] == "converged" && s["conforming"].as_array().is_some_and(|c| c.len() == 1 && c[0] != good)
    });
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fleet.data().join("demo.json")).unwrap()).unwrap();
    let mut input = manifest["sagas"][0][1].clone();
    input["order_id"] = "order-after-quarantine".into();
    let id = fleet.run(&["start", "--saga", "create_order", "--input", &input.to_string()]).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.get("inventory-debug", "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never left quarantine");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = fleet.run(&["sagas", "show", &id]);
        if shown.contains("status   completed") {
            assert!(shown.contains("by inventory-debug"), "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "the saga did not complete:\n{shown}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_rollout_is_rolling_inside_its_window_and_drifted_past_it() {
    let _serial = serial();
    let mut fleet = Fleet::new("services:\n  inventory:\n    rolloutWindow: 6s\n");
    fleet.orchestrator();
    fleet.worker("inventory", "inventory-1", &[]);
    fleet.worker("inventory", "inventory-2", &[]);
    fleet.wait_inventory("the old fleet", Duration::from_secs(60), |s| {
        s["verdict"] == "converged" && live_instances(s) == 2
    });
    // The new configuration rolls out, clearly after the old one started.
    std::thread::sleep(Duration::from_millis(2 * INTERVAL_MS));
    fleet.worker("inventory", "inventory-3", &[("LOG_LEVEL", "debug")]);
    let view = fleet.wait_inventory("the rollout", Duration::from_secs(60), |s| live_instances(s) == 3);
    let s = inventory(&view).unwrap();
    assert_eq!(s["verdict"], "rolling", "{s:#}");
    assert_eq!(s["conforming"].as_array().unwrap().len(), 2, "both builds conform while rolling");
    let since = s["fingerprints"].as_array().unwrap().iter().filter_map(|g| g["since"].as_u64()).max().unwrap();

    // Still rolling until the window ends, drifted right after.
    let view = fleet.wait_inventory("the end of the window", Duration::from_secs(30), |s| s["verdict"] != "rolling");
    let s = inventory(&view).unwrap();
    assert_eq!(s["verdict"], "drifted", "{s:#}");
    assert!(s["reasons"][0].as_str().unwrap().contains("past the 6s rollout window"), "{s:#}");
    let after = view["at"].as_u64().unwrap() - since;
    assert!((6_000..6_000 + 2 * INTERVAL_MS).contains(&after), "drifted {after} ms after the new build appeared");
    assert!(difference(s, "inventory-3", "config_hash").is_some(), "{s:#}");
}

#[test]
fn a_patched_executable_that_kept_its_version_is_caught_by_its_sha256() {
    let _serial = serial();
    let mut fleet = Fleet::new("");
    // Same version, same git sha, same configuration: one byte more.
    let patched = fleet.data().join("sqsaga-patched");
    std::fs::copy(BIN, &patched).unwrap();
    std::fs::OpenOptions::new().append(true).open(&patched).unwrap().write_all(&[0]).unwrap();
    fleet.orchestrator();
    fleet.worker("inventory", "inventory-1", &[]);
    fleet.worker("inventory", "inventory-2", &[]);
    fleet.spawn("inventory-patched", Some(&patched), &["worker", "--service", "inventory"], &[]);
    let view = expect_drifted(&mut fleet, "inventory-patched", "executable_sha256", "under the same version");
    let s = inventory(&view).unwrap();
    let parts: Vec<&Value> = s["fingerprints"].as_array().unwrap().iter().map(|g| &g["parts"]).collect();
    assert_eq!(parts[0]["version"], parts[1]["version"]);
    assert_eq!(parts[0]["config_hash"], parts[1]["config_hash"]);
    assert_ne!(parts[0]["executable_sha256"], parts[1]["executable_sha256"]);
    assert_eq!(s["differences"].as_array().unwrap().len(), 1, "only the executable differs: {s:#}");
}

#[test]
fn a_worker_lacking_a_contract_never_runs_that_step() {
    let _serial = serial();
    let mut fleet = Fleet::new("");
    fleet.orchestrator();
    fleet.worker("inventory", "inventory-1", &[]);
    fleet.worker("inventory", "inventory-2", &[]);
    fleet.spawn(
        "inventory-old",
        None,
        &["worker", "--service", "inventory", "--without-contract", "inventory/v1"],
        &[],
    );
    fleet.worker("payment", "payment-1", &[]);
    fleet.worker("notification", "notification-1", &[]);
    let view = expect_drifted(&mut fleet, "inventory-old", "contracts", "lacks inventory/v1");
    assert_eq!(inventory(&view).unwrap()["missing_contracts"], serde_json::json!([]), "its siblings implement it");

    fleet.run_orders(ORDERS);
    assert_eq!(fleet.metric("inventory-old", "sqsaga_messages_processed_total", r#"service="inventory""#), 0.0);
    assert_eq!(fleet.metric("inventory-old", "sqsaga_messages_dead_lettered_total", r#"service="inventory""#), 0.0);
    assert!(fleet.metric("inventory-old", "sqsaga_commands_missing_contract_total", r#"service="inventory""#) > 0.0);
}

#[test]
fn a_service_with_no_conforming_instance_is_said_out_loud_and_its_commands_wait() {
    let _serial = serial();
    let mut fleet = Fleet::new("services:\n  inventory:\n    mode: enforce\n    expect: {version: 9.9.9}\n");
    fleet.orchestrator();
    fleet.worker("inventory", "inventory-1", &[]);
    let view = fleet.wait_inventory("the service to be blocked", Duration::from_secs(60), |s| !s["blocked"].is_null());
    let s = inventory(&view).unwrap();
    assert_eq!(s["verdict"], "drifted");
    assert_eq!(s["conforming"], serde_json::json!([]));
    assert!(s["blocked"].as_str().unwrap().contains("no instance of inventory conforms"), "{s:#}");
    assert!(difference(s, "inventory-1", "version").is_some_and(|d| d["against"] == "expectation"), "{s:#}");

    // The orchestrator says so: /readyz (still ready: it can work), metrics, `sqsaga fleet`.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The readiness info is refreshed every half interval.
        let (status, body) = fleet.get("orchestrator", "/readyz");
        assert_eq!(status, 200, "{body}");
        let ready: Value = serde_json::from_str(&body).unwrap();
        if ready["fleet_blocked"][0]["service"] == "inventory" {
            assert!(ready["fleet_blocked"][0]["reason"].as_str().unwrap().contains("conforms"), "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never listed the blocked service: {ready}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fleet.metric("orchestrator", "sqsaga_fleet_no_eligible_worker", r#"service="inventory""#), 1.0);
    let url = format!("http://{}/fleet", fleet.addr("orchestrator"));
    assert!(run(&["fleet", "--url", &url]).contains("NO ELIGIBLE WORKER: no instance of inventory conforms"));

    // A saga's first command waits: the one worker releases it and quarantines itself.
    std::thread::sleep(Duration::from_millis(2 * INTERVAL_MS));
    let input = r#"{"order_id":"o-1","sku":"A","qty":1,"account":"acct","amount":100}"#;
    let id = fleet.run(&["start", "--saga", "create_order", "--input", input]).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.get("inventory-1", "/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "the worker never quarantined itself");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fleet.metric("inventory-1", "sqsaga_messages_processed_total", r#"service="inventory""#), 0.0);
    assert!(fleet.run(&["sagas", "show", &id]).contains("status   running"));
}

#[test]
fn a_bad_fleet_policy_stops_the_orchestrator_at_start_naming_each_place() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("fleet.yaml");
    std::fs::write(&policy, "services:\n  inventory:\n    mode: enfroce\n    rolloutWindow: 10\n").unwrap();
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SQSAGA_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .args(["orchestrator", "--data-dir"])
        .arg(dir.path())
        .env("SQSAGA_FLEET_POLICY", &policy)
        .env("SQSAGA_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let name = policy.display();
    assert!(stderr.contains(&format!("{name}:3:11: services.inventory.mode: `enfroce` is not a mode")), "{stderr}");
    assert!(stderr.contains(&format!("{name}:4:20: services.inventory.rolloutWindow: bad duration `10`")), "{stderr}");
    assert!(!dir.path().join("sqsaga.db").exists(), "nothing is touched before the policy is valid");
}
