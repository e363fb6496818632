//! The operator docs cannot drift from the code: `sqsaga config docs`
//! prints exactly docs/configuration.md, and docs/operations.md names
//! exactly the metrics the code exports (every `"sqsaga_..."` string literal
//! outside test modules of the crates' sources).
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn config_docs_prints_docs_configuration_md() {
    let out = Command::new(support::BIN).args(["config", "docs"]).env_clear().output().unwrap();
    assert!(out.status.success());
    let on_disk = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == on_disk,
        "docs/configuration.md is out of date; regenerate it:\n  {}",
        sqsaga_config::docs::REGENERATE
    );
}

/// `sqsaga_<name>` identifiers that follow `prefix` (a quote in code, a
/// backtick in Markdown).
fn names_after(text: &str, prefix: char) -> BTreeSet<String> {
    let needle = format!("{prefix}sqsaga_");
    text.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &text[at + 1..];
            rest.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect::<String>()
        })
        // `sqsaga_<noun>_total` in prose is a pattern, not a name.
        .filter(|name| !name.ends_with('_'))
        .collect()
}

/// Metric names in the sources of every crate, test modules excluded.
fn metric_names_in_code() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![root().join("crates"), root().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_dir() && !matches!(name, "tests" | "target" | "benches") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path.components().any(|c| c.as_os_str() == "src") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                names.extend(names_after(code, '"'));
            }
        }
    }
    names
}

#[test]
fn operations_md_lists_exactly_the_exported_metrics() {
    let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let documented = names_after(&doc, '`');
    let exported = metric_names_in_code();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(undocumented.is_empty(), "metrics missing from docs/operations.md: {undocumented:?}");
    assert!(stale.is_empty(), "docs/operations.md names metrics the code no longer has: {stale:?}");
}
