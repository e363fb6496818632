//! Runs a document's shell block as written (the README's multi-process
//! block, the participant guide's end-to-end block): bash with `set -e`, in
//! a directory of the test's choosing, with a clean environment whose PATH
//! starts with the built binaries, so the block finds `sqsaga` and the
//! example workers exactly as a reader who followed the document would.

use std::path::Path;
use std::process::Command;

/// What a block did.
#[derive(Debug)]
pub struct BlockRun {
    /// The script that ran (the block and the epilogue).
    pub script: String,
    /// The exit code; `None` when a signal ended bash.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl BlockRun {
    /// Everything a failing test should show: the script and both streams.
    pub fn report(&self) -> String {
        format!("script:\n{}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}", self.script, self.code, self.stdout, self.stderr)
    }
}

/// Runs `lines` then `epilogue` under `set -e` in `dir`, with only `PATH`
/// (`bin_dir` first) and `LOG_LEVEL=warn` in the environment. `Err` when
/// bash cannot be started at all.
pub fn run_block(lines: &[String], epilogue: &str, dir: &Path, bin_dir: &Path) -> std::io::Result<BlockRun> {
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -e\n{}\n{epilogue}\n", lines.join("\n"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("LOG_LEVEL", "warn")
        .output()?;
    Ok(BlockRun {
        script,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_line_stops_the_block_and_the_environment_is_clean() {
        let dir = std::env::temp_dir();
        let lines = vec!["echo first".to_string(), "echo \"home=${HOME:-unset}\"".to_string()];
        let ok = run_block(&lines, "", &dir, Path::new("/nonexistent")).unwrap();
        assert_eq!(ok.code, Some(0), "{}", ok.report());
        assert_eq!(ok.stdout, "first\nhome=unset\n");

        let lines = vec!["false".to_string(), "echo never".to_string()];
        let failed = run_block(&lines, "", &dir, Path::new("/nonexistent")).unwrap();
        assert_eq!(failed.code, Some(1), "{}", failed.report());
        assert!(!failed.stdout.contains("never"), "{}", failed.report());
    }
}
