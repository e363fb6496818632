//! `docs/participants.md`, section 7, run as written: the block after the
//! marker comment, in a fresh directory holding the saga definition, with
//! the built `sqsaga` and `shipping-worker` first on PATH (so the block's
//! `cargo build` and `export PATH` lines are the test's to do, not the
//! shell's). It must exit 0, with `parcel-1` completed and `parcel-2`
//! compensated; a second test runs the same block with the participant in PostgreSQL.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Command;

use sqsaga_postgres::scratch::ScratchDb;
use sqsaga_testing::shell::run_block;

const MARKER: &str = "<!-- examples/shipping/tests/guide.rs runs the next block as written -->";

/// The fenced block after the marker, without the lines the test does itself.
fn block(guide: &str) -> Vec<String> {
    let after = guide.split(MARKER).nth(1).expect("the marker in docs/participants.md");
    let body = after.split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a ```sh block");
    body.lines()
        .filter(|l| !l.starts_with("cargo build") && !l.starts_with("export PATH="))
        .map(str::to_string)
        .collect()
}

/// The `sqsaga` binary: built with the workspace's tests; built here when
/// this package's tests run alone.
fn sqsaga(bin_dir: &Path, root: &Path) -> PathBuf {
    let path = bin_dir.join("sqsaga");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = Command::new(cargo)
            .args(["build", "-p", "sqsaga-cli", "--bin", "sqsaga"])
            .current_dir(root)
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the sqsaga binary");
    }
    path
}

/// Runs the guide's block (`edit` applied to its lines) in a fresh
/// directory and checks what every run must show: exit 0, `parcel-1`
/// completed, `parcel-2` compensated, the worker ready.
fn run_guide(edit: impl Fn(Vec<String>) -> Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(root.join("docs/participants.md")).unwrap();
    let block = block(&guide);
    assert!(
        block.iter().any(|l| l.starts_with("sqsaga orchestrator") || l.contains(" sqsaga orchestrator")),
        "{block:?}"
    );
    let block = edit(block);
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_shipping-worker")).parent().unwrap().to_path_buf();
    sqsaga(&bin_dir, &root);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("examples/shipping")).unwrap();
    std::fs::copy(
        root.join("examples/shipping/ship_parcel.yaml"),
        dir.path().join("examples/shipping/ship_parcel.yaml"),
    )
    .unwrap();
    let run = run_block(&block, "wait", dir.path(), &bin_dir).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.report());
    let stdout = &run.stdout;
    let finals: Vec<&str> = stdout.lines().filter(|l| l.starts_with("status ")).collect();
    assert!(finals.contains(&"status   completed") && finals.contains(&"status   compensated"), "{stdout}");
    let heavy = stdout.split("saga     parcel-2").nth(1).unwrap_or_default();
    assert!(heavy.contains("status   compensated"), "parcel-2 should compensate:\n{stdout}");
    assert!(stdout.contains(r#""service":"shipping","status":"ready""#), "the worker's /readyz:\n{stdout}");
}

#[test]
fn the_guide_runs_as_written() {
    run_guide(|block| block);
}

/// Section 7's PostgreSQL variant: the same block with `participant_db` a
/// `postgres://` URL (a scratch database on the machine's server) and
/// ports of its own, so it can run beside the SQLite one; the shipments are
/// then rows of the schema `shipping` there.
#[tokio::test(flavor = "multi_thread")]
async fn the_guide_runs_with_the_participant_in_postgres() {
    let scratch = ScratchDb::create().await.unwrap();
    let url = scratch.url.clone();
    let edit = move |block: Vec<String>| {
        let mut out = vec![format!("export SQSAGA_PARTICIPANT_DB='{url}'")];
        out.extend(block.into_iter().map(|l| l.replace(":8095", ":8195").replace(":8096", ":8196")));
        out
    };
    tokio::task::spawn_blocking(move || run_guide(edit)).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&scratch.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client.query("SELECT status FROM shipping.shipments ORDER BY parcel_id", &[]).await.unwrap();
    let statuses: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(statuses, ["dispatched", "cancelled"]);
    drop(client);
    scratch.drop_now().await.unwrap();
}
