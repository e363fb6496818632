//! `docs/participants.md`, section 7, run as written: the block after the
//! marker comment, in a fresh directory holding the saga definition, with
//! the built `sqsaga` and `shipping-worker` first on PATH (so the block's
//! `cargo build` and `export PATH` lines are the test's to do, not the
//! shell's). It must exit 0, with `parcel-1` completed and `parcel-2`
//! compensated.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Command;

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

#[test]
fn the_guide_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(root.join("docs/participants.md")).unwrap();
    let block = block(&guide);
    assert!(
        block.iter().any(|l| l.starts_with("sqsaga orchestrator") || l.contains(" sqsaga orchestrator")),
        "{block:?}"
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_shipping-worker")).parent().unwrap().to_path_buf();
    sqsaga(&bin_dir, &root);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("examples/shipping")).unwrap();
    std::fs::copy(
        root.join("examples/shipping/ship_parcel.yaml"),
        dir.path().join("examples/shipping/ship_parcel.yaml"),
    )
    .unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -e\n{}\nwait\n", block.join("\n"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "script:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let finals: Vec<&str> = stdout.lines().filter(|l| l.starts_with("status ")).collect();
    assert!(finals.contains(&"status   completed") && finals.contains(&"status   compensated"), "{stdout}");
    let heavy = stdout.split("saga     parcel-2").nth(1).unwrap_or_default();
    assert!(heavy.contains("status   compensated"), "parcel-2 should compensate:\n{stdout}");
    assert!(stdout.contains(r#""ready":true"#) || stdout.contains("ready"), "the worker's /readyz:\n{stdout}");
}
