//! The README's multi-process block, run as written: the lines from `sqsaga
//! demo load` to `sqsaga demo check`, in a fresh directory, with the built
//! binary first on PATH. It must exit 0 (the invariant check), and every
//! process must have started (the ports are distinct). The background
//! processes get SIGTERM afterwards, as the README says to stop them.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;

use sqsaga_testing::shell::run_block;

/// The block: the indented lines from `sqsaga demo load` through `sqsaga demo check`.
fn multi_process_block(readme: &str) -> Vec<String> {
    let lines: Vec<&str> = readme.lines().collect();
    let start =
        lines.iter().position(|l| l.trim_start().starts_with("sqsaga demo load")).expect("the block's first line");
    let end = start + lines[start..].iter().position(|l| l.trim_start().starts_with("sqsaga demo check")).unwrap();
    lines[start..=end].iter().map(|l| l.trim().to_string()).collect()
}

#[test]
fn the_readme_multi_process_block_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = multi_process_block(&readme);
    assert!(block.len() >= 6, "{block:?}");
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sqsaga")).parent().unwrap().to_path_buf();
    // The block, then the README's way to stop the background processes.
    let epilogue = "status=$?\nkill $(jobs -p) 2>/dev/null || true\nwait\nexit $status";
    let run = run_block(&block, epilogue, dir.path(), &bin_dir).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.report());
    assert!(run.stdout.contains("invariants: OK"), "{}", run.report());
    assert!(!run.stderr.contains("Address already in use"), "{}", run.report());
}
