//! The layering ARCHITECTURE.md states, checked: every dependency between
//! the workspace's crates (read from `cargo metadata`) points to a lower
//! layer, the AWS adapter depends on the ports only, and no crate has an
//! import cycle between its source files (`crate::a` in `b.rs` and
//! `crate::b` in `a.rs`).
//!
//! It lives in `sqsaga-core` because that crate builds first and fastest;
//! it reads the whole workspace.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Each crate's layer; a crate may depend only on crates of lower layers.
/// The same table is drawn in ARCHITECTURE.md ("Layers").
const LAYERS: &[(&str, u8)] = &[
    // The pure core.
    ("sqsaga-core", 0),
    // Wire format, the queue port, configuration, HTTP plumbing, SQLite plumbing.
    ("sqsaga-protocol", 1),
    ("sqsaga-queue", 1),
    ("sqsaga-config", 1),
    ("sqsaga-http", 1),
    ("sqsaga-sqlite", 1),
    // The store port; the drift guard's pure judgement.
    ("sqsaga-store", 2),
    ("sqsaga-drift", 2),
    // Adapters: they know ports, never services.
    ("sqsaga-embedded", 3),
    ("sqsaga-aws", 3),
    ("sqsaga-sqs-endpoint", 3),
    // Services.
    ("sqsaga-orchestrator", 4),
    ("sqsaga-worker", 4),
    // The composition root.
    ("sqsaga-runtime", 5),
    // The PostgreSQL and DynamoDB adapters of the worker's participant
    // database port.
    ("sqsaga-postgres", 5),
    ("sqsaga-dynamodb", 5),
    // In-memory adapters of the ports and the time-skipping harness for
    // saga authors' tests (the order example's tests use it).
    ("sqsaga-testing", 5),
    // What runs on it: the order example (participants, demo runs), the
    // shipping example of docs/participants.md, the deploy linter.
    ("sqsaga-order", 6),
    ("sqsaga-shipping", 6),
    ("sqsaga-lint-deploy", 6),
    // The conformance kit: drives a running participant through the protocol.
    ("sqsaga-conformance", 6),
    // Above the order example: the benchmarks, the simulator (it runs the
    // order saga's participants and invariant checker).
    ("sqsaga-bench", 7),
    ("sqsaga-sim", 7),
    // The binary.
    ("sqsaga-cli", 8),
];

/// The AWS adapter's only workspace dependencies (issue: adapters depend on ports).
const AWS_MAY_USE: &[&str] = &["sqsaga-core", "sqsaga-protocol", "sqsaga-queue", "sqsaga-store"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(package, dependency, kind)` for every dependency between workspace crates.
fn edges() -> (BTreeSet<String>, Vec<(String, String, String)>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages.iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    let mut edges = Vec::new();
    for p in packages {
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            if names.contains(dep) {
                let kind = d["kind"].as_str().unwrap_or("normal").to_string();
                edges.push((p["name"].as_str().unwrap().to_string(), dep.to_string(), kind));
            }
        }
    }
    (names, edges)
}

fn layer(name: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("crate {name} has no layer: add it to LAYERS here and to ARCHITECTURE.md"))
}

#[test]
fn every_dependency_points_to_a_lower_layer() {
    let (names, edges) = edges();
    for name in &names {
        layer(name);
    }
    let wrong: Vec<String> = edges
        .iter()
        .filter(|(from, to, kind)| {
            // Dev-dependencies may reach sideways for test doubles, never up.
            if kind == "dev" { layer(to) > layer(from) } else { layer(to) >= layer(from) }
        })
        .map(|(from, to, kind)| format!("{from} (layer {}) -> {to} (layer {}) [{kind}]", layer(from), layer(to)))
        .collect();
    assert!(wrong.is_empty(), "dependencies against the layering:\n{}", wrong.join("\n"));
}

#[test]
fn the_aws_adapter_depends_on_ports_only() {
    let (_, edges) = edges();
    let used: Vec<&str> = edges
        .iter()
        .filter(|(from, _, kind)| from == "sqsaga-aws" && kind == "normal")
        .map(|(_, to, _)| to.as_str())
        .filter(|to| !AWS_MAY_USE.contains(to))
        .collect();
    assert!(used.is_empty(), "sqsaga-aws depends on {used:?}; it may use only {AWS_MAY_USE:?}");
}

/// The table above catches an edge that breaks it (the test's own check).
#[test]
fn the_layer_rule_rejects_an_upward_edge() {
    assert!(layer("sqsaga-aws") >= layer("sqsaga-store"));
    assert!(layer("sqsaga-orchestrator") > layer("sqsaga-aws"), "a service above the adapters");
    assert!(layer("sqsaga-runtime") > layer("sqsaga-worker"));
}

// ---------------------------------------------------------------------------
// File-level import cycles

/// The top-level module a file belongs to (`src/a.rs`, `src/a/b.rs` → `a`);
/// `None` for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy().to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first path segment of every `crate::...` reference in code (doc
/// comments and comments skipped), braces expanded: `crate::{a, b::c}` → a, b.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let first: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !first.is_empty() {
                        refs.insert(first);
                    }
                }
            } else {
                let first: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !first.is_empty() {
                    refs.insert(first);
                }
            }
        }
    }
    refs
}

/// `pub use module::{A, B}` in the crate root: item name → module.
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for statement in root.split(';') {
        let s = statement.trim();
        let Some(path) = s.strip_prefix("pub use ") else { continue };
        let Some((module, items)) = path.split_once("::") else { continue };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit("::").next().unwrap_or("").trim();
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    map
}

/// Module dependency graph of one crate's `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let root = ["lib.rs", "main.rs"].iter().map(|f| src.join(f)).find(|p| p.is_file());
    let exported = root.map(|r| reexports(&std::fs::read_to_string(r).unwrap())).unwrap_or_default();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(src, file) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        let entry = graph.entry(from.clone()).or_default();
        for r in crate_refs(&text) {
            let to = if modules.contains(&r) { Some(r) } else { exported.get(&r).cloned() };
            if let Some(to) = to.filter(|t| *t != from && modules.contains(t)) {
                entry.insert(to);
            }
        }
    }
    graph
}

/// Cycles as lists of modules (each strongly connected group of two or more).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_string()];
        while let Some(n) = stack.pop() {
            for m in graph.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|k| (k, reach(k))).collect();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for (a, from_a) in &reachable {
        if !from_a.contains(*a) {
            continue;
        }
        let group: Vec<String> =
            from_a.iter().filter(|b| reachable.get(b).is_some_and(|r| r.contains(*a))).cloned().collect();
        if group.len() > 1 && !groups.contains(&group) {
            groups.push(group);
        }
    }
    groups
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".to_string(), ["a".to_string()].into()),
        ("c".to_string(), ["a".to_string()].into()),
    ]
    .into();
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
    assert_eq!(crate_refs("use crate::{demo::X, fleet};\n// crate::ignored\nlet x = crate::serve::f();").len(), 3);
}

#[test]
fn no_crate_has_an_import_cycle_between_its_files() {
    let root = workspace_root();
    let mut found = Vec::new();
    for parent in ["crates", "examples"] {
        for entry in std::fs::read_dir(root.join(parent)).unwrap().flatten() {
            let src = entry.path().join("src");
            if !src.is_dir() {
                continue;
            }
            for cycle in cycles(&module_graph(&src)) {
                found.push(format!("{}: {}", entry.path().display(), cycle.join(" <-> ")));
            }
        }
    }
    assert!(found.is_empty(), "import cycles between files:\n{}", found.join("\n"));
}

/// The binary crate stays thin: argument parsing, `main` and printing, the
/// work in the libraries (it held 5.4k lines of library logic before the
/// runtime crate existed).
#[test]
fn the_binary_crate_stays_under_1500_lines() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates/cli/src"), &mut files);
    let lines: usize = files.iter().map(|f| std::fs::read_to_string(f).unwrap().lines().count()).sum();
    assert!(lines < 1500, "crates/cli/src has {lines} lines: move library logic to the runtime or the examples");
}
