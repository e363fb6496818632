//! The operator commands as a new user meets them, on the real binary:
//! `start` refuses an unknown saga at once (exit 1, naming the known ones)
//! instead of sending a request the orchestrator would dead-letter;
//! `sagas resume` refuses a saga that does not need an operator; `sagas
//! show` and `list` speak in step names, words and RFC 3339 times.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn sqsaga(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sqsaga"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_clear()
        .env("LOG_LEVEL", "error")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn start_refuses_an_unknown_saga_naming_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = sqsaga(&["start", "--saga", "nosuch", "--input", "{}"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("no saga `nosuch`"), "{said}");
    assert!(said.contains("`create_order` v1"), "{said}");
    // Nothing was sent: the orchestrator queue does not even exist.
    let listed = sqsaga(&["dlq", "list", "orchestrator", "--json"], dir.path());
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("nosuch"), "{}", text(&listed));
}

#[test]
fn start_refuses_an_input_that_fails_the_saga_input_schema() {
    let dir = tempfile::tempdir().unwrap();
    let input = r#"{"order_id": "o-1", "sku": "A", "qty": 0, "account": "acc-1", "amount": 100}"#;
    let out = sqsaga(&["start", "--saga", "create_order", "--input", input], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("input does not match create_order v1's input schema: /qty"), "{said}");
    assert!(said.contains("nothing was sent"), "{said}");
}

#[test]
fn finished_sagas_read_well_and_cannot_be_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = sqsaga(&["demo", "--orders", "5", "--failure-rate", "0", "--json"], &data);
    assert_eq!(demo.status.code(), Some(0), "{}", text(&demo));

    let listed = sqsaga(&["sagas", "list", "--json"], &data);
    let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows.len(), 5, "{rows:?}");
    let id = rows[0]["id"].as_str().unwrap().to_string();

    let table = text(&sqsaga(&["sagas", "list"], &data));
    assert!(table.contains("showing 5 of 5"), "{table}");
    assert!(table.lines().next().unwrap().contains("STARTED"), "{table}");

    let shown = text(&sqsaga(&["sagas", "show", &id], &data));
    assert!(shown.contains("reserve_stock"), "step names: {shown}");
    assert!(shown.contains("succeeded") || shown.contains("refused"), "statuses in words: {shown}");
    let started = shown.lines().find(|l| l.starts_with("started")).unwrap();
    assert!(started.contains('T') && started.trim_end().ends_with('Z'), "RFC 3339: {started}");

    let resume = sqsaga(&["sagas", "resume", &id], &data);
    assert_eq!(resume.status.code(), Some(1), "{}", text(&resume));
    assert!(text(&resume).contains("not needs_operator"), "{}", text(&resume));
}
