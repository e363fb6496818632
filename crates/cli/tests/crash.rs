//! Crash test: the multi-process form of the demo, with the orchestrator and
//! the workers killed with SIGKILL at random moments and restarted. At the
//! end every saga must be terminal and the invariants must hold — nothing
//! lost, nothing done twice. It runs twice: with the participants in SQLite
//! files, and in PostgreSQL (a database `demo load` creates on the test
//! server, `SQSAGA_TEST_POSTGRES` or 127.0.0.1:5432, dropped at the end).
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sqsaga_postgres::scratch::{ScratchDb, server_url};

const BIN: &str = env!("CARGO_BIN_EXE_sqsaga");

/// Kills every child still running when the test ends, pass or fail.
struct Fleet {
    children: Vec<(String, Child)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary with none of the test's own `SQSAGA_*` variables: cargo
/// exports the build script's `SQSAGA_GIT_SHA` to tests, and the strict
/// configuration rejects unknown `SQSAGA_*` variables.
fn sqsaga() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SQSAGA_")) {
        cmd.env_remove(k);
    }
    cmd
}

fn spawn(dir: &Path, participant_db: Option<&str>, role: &str) -> Child {
    let mut cmd = sqsaga();
    match role {
        "orchestrator" => cmd.arg("orchestrator"),
        service => cmd.args(["worker", "--service", service, "--failure-rate", "0.2"]),
    };
    if let (Some(url), false) = (participant_db, role == "orchestrator") {
        cmd.args(["--participant-db", url]);
    }
    cmd.arg("--data-dir")
        .arg(dir)
        // Four processes on one machine: each picks a free HTTP port.
        .env("SQSAGA_HTTP_ADDR", "127.0.0.1:0")
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {role}: {e}"))
}

/// Drops the PostgreSQL database a run created, pass or fail.
struct DropDatabase(Option<ScratchDb>);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            if let Err(e) = rt.block_on(db.drop_now()) {
                eprintln!("{e}");
            }
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_does_nothing_twice() {
    crash_run(&[]);
}

#[test]
fn sigkill_with_postgres_participants_loses_nothing_and_does_nothing_twice() {
    crash_run(&["--participants", "postgres", "--postgres-url", &server_url()]);
}

/// Loads 300 orders (with `load_args`), runs the four processes with eight
/// SIGKILLs among them, then checks.
fn crash_run(load_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let load = sqsaga()
        .args(["demo", "load", "--orders", "300", "--seed", "11"])
        .args(load_args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(load.status.success(), "demo load failed: {}", String::from_utf8_lossy(&load.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("demo.json")).unwrap()).unwrap();
    let participant_db = manifest["participant_db"].as_str().map(str::to_string);
    let _database = DropDatabase(participant_db.as_deref().map(|url| ScratchDb::existing(&server_url(), url).unwrap()));
    let db = participant_db.as_deref();

    let roles = ["orchestrator", "inventory", "payment", "notification"];
    let mut fleet = Fleet { children: roles.iter().map(|r| (r.to_string(), spawn(data, db, r))).collect() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    );
    let mut kills = Vec::new();
    let started = Instant::now();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1200)));
        // The orchestrator every other time, a random worker otherwise.
        let victim = if kills.len() % 2 == 0 { 0 } else { rng.random_range(1..roles.len()) };
        let (role, child) = &mut fleet.children[victim];
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        kills.push(role.clone());
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        *child = spawn(data, db, role);
    }
    eprintln!("killed {kills:?} within {:?}", started.elapsed());

    // A SIGKILLed orchestrator holds the start requests its admission
    // control held back until their visibility ends (2 minutes, README,
    // admission control): those sagas start only then, so the wait allows
    // for that and a little more.
    let check = sqsaga().args(["demo", "check", "--wait", "240", "--json", "--data-dir"]).arg(data).output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    eprintln!("{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    let summary: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    assert_eq!(summary["unfinished"], 0, "{summary}");
    assert_eq!(summary["sagas"], 300, "{summary}");
    assert_eq!(summary["invariants_ok"], true, "{summary}");
    if participant_db.is_some() {
        assert!(summary["participants"].as_str().unwrap().starts_with("postgres://"), "{summary}");
    }
    assert!(check.status.success());
}
