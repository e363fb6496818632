//! Records the git commit the binary is built from, for the drift guard's
//! fingerprint and `sqsaga_build_info`. `SQSAGA_GIT_SHA` overrides it (CI,
//! Docker builds without `.git`); `unknown` when neither is available.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SQSAGA_GIT_SHA");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    let sha = std::env::var("SQSAGA_GIT_SHA").ok().filter(|s| !s.is_empty()).or_else(|| {
        let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!("cargo:rustc-env=BUILD_GIT_SHA={}", sha.unwrap_or_else(|| "unknown".to_string()));
}
