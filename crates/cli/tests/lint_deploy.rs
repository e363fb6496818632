//! `sqsaga lint-deploy` on the shipped deployment tree (which must pass) and
//! on the negative fixtures in `deploy/tests/bad/` (each a render of the
//! production overlay with exactly one fault, which must be rejected for
//! that fault and nothing else).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn lint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sqsaga"))
        .arg("lint-deploy")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run sqsaga: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The finding lines (everything but the summary).
fn findings(out: &Output) -> Vec<String> {
    stdout(out).lines().filter(|l| !l.starts_with("lint-deploy: ")).map(str::to_string).collect()
}

fn have_kubectl() -> bool {
    Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success())
}

/// Asserts that `fixture` fails with exactly one finding, which contains every one of `needles`.
fn rejected_for(fixture: &str, needles: &[&str]) -> String {
    let out = lint(&[fixture]);
    let lines = findings(&out);
    assert_eq!(out.status.code(), Some(1), "{fixture} must fail:\n{}", stdout(&out));
    assert_eq!(lines.len(), 1, "{fixture} must fail for exactly one reason:\n{}", stdout(&out));
    for needle in needles {
        assert!(lines[0].contains(needle), "{fixture}: expected `{needle}` in\n{}", lines[0]);
    }
    assert!(lines[0].starts_with(&format!("{fixture}: ")), "the finding names the file: {}", lines[0]);
    lines[0].clone()
}

#[test]
fn the_shipped_deploy_tree_passes() {
    if !have_kubectl() {
        eprintln!("skipped: kubectl is not installed (needed to render deploy/k8s)");
        return;
    }
    let out = lint(&["deploy"]);
    assert!(
        out.status.success(),
        "lint-deploy deploy failed:\n{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(findings(&out), Vec::<String>::new());
    let summary = stdout(&out);
    assert!(summary.contains("lint-deploy: ok"), "{summary}");
    for part in ["deploy/k8s/base", "deploy/k8s/overlays/production", "deploy/chef/cookbooks/sqsaga_worker"] {
        assert!(summary.contains(part), "{part} not checked: {summary}");
    }
}

#[test]
fn the_cookbook_alone_passes() {
    let out = lint(&["deploy/chef/cookbooks/sqsaga_worker"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(findings(&out), Vec::<String>::new());
}

#[test]
fn unknown_variable_is_rejected() {
    rejected_for(
        "deploy/tests/bad/unknown-env.yaml",
        &["Deployment/sqsaga-inventory spec.template.spec.containers[0].env[", "].name", "SQSAGA_TYPO"],
    );
}

#[test]
fn wrong_probe_path_is_rejected() {
    rejected_for(
        "deploy/tests/bad/wrong-probe-path.yaml",
        &[
            "Deployment/sqsaga-inventory spec.template.spec.containers[0].livenessProbe.httpGet.path",
            "`/health`",
            "/healthz",
        ],
    );
}

#[test]
fn replicas_under_keda_are_rejected() {
    rejected_for(
        "deploy/tests/bad/replicas-with-scaledobject.yaml",
        &["Deployment/sqsaga-inventory spec.replicas", "replicas: 3", "ScaledObject/sqsaga-inventory"],
    );
}

/// Undoing each fixture's one fault gives the production render back, which
/// passes: the fixtures fail for their fault, not for something else (and
/// the production render is checked even without kubectl).
#[test]
fn fixtures_pass_once_their_fault_is_undone() {
    let undo: [(&str, &str, &str); 3] = [
        ("unknown-env.yaml", "        - name: SQSAGA_TYPO\n          value: \"1\"\n", ""),
        ("wrong-probe-path.yaml", "path: /health\n", "path: /healthz\n"),
        ("replicas-with-scaledobject.yaml", "  replicas: 3\n", ""),
    ];
    for (name, fault, fix) in undo {
        let path = root().join("deploy/tests/bad").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(text.matches(fault).count(), 1, "{name}: the fault is not where the test expects it");
        let fixed = text.replacen(fault, fix, 1);

        let mut child = Command::new(env!("CARGO_BIN_EXE_sqsaga"))
            .args(["lint-deploy", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sqsaga: {e}"));
        let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
        stdin.write_all(fixed.as_bytes()).unwrap_or_else(|e| panic!("cannot write stdin: {e}"));
        drop(stdin); // EOF
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{name} without its fault:\n{}", stdout(&out));
        assert_eq!(findings(&out), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn several_paths_are_checked_together() {
    let out = lint(&["deploy/tests/bad/unknown-env.yaml", "deploy/tests/bad/wrong-probe-path.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(findings(&out).len(), 2, "{}", stdout(&out));
}

#[test]
fn a_missing_path_is_an_error() {
    let out = lint(&["deploy/no-such-file.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-file.yaml"));
}

#[test]
fn a_directory_that_is_nothing_known_is_an_error() {
    let out = lint(&["deploy/tests"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a manifest file"), "{:?}", out);
}
