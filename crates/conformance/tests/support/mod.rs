//! What the tests that run participants in other languages share: building
//! the Go participant, free ports, settings from a list.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqsaga_config::{Settings, Sources};

/// Builds the Go participant once per test process into `target/tmp` (a
/// name per process: nextest runs tests as parallel processes, and one must
/// not overwrite the binary another is running; Go's build cache makes the
/// second build cheap).
pub fn build() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let out =
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sqsaga-participant-go-{}", std::process::id()));
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(root.join("participants/go"))
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .status()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run `go` ({e}): apt-get install golang-go golang-github-aws-aws-sdk-go-v2-dev \
                         golang-github-lib-pq-dev (scripts/test does)"
                    )
                });
            assert!(status.success(), "go build of participants/go failed (are the Debian Go packages installed?)");
            out
        })
        .clone()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn settings(env: &[(&str, String)]) -> Settings {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Settings::resolve(&Sources::new(&env)).unwrap()
}
