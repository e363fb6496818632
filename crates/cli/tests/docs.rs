//! The operator docs cannot drift from the code: `sqsaga config docs`
//! prints exactly docs/configuration.md, and docs/operations.md lists
//! exactly the metric families (name and type) of the registries the
//! processes build (`sqsaga_runtime::metrics`), walked after encoding.
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

/// `(name, type)` of every row of the metric tables in docs/operations.md:
/// `| \`sqsaga_...\` | type | labels | meaning |`.
fn documented_families(doc: &str) -> BTreeSet<(String, String)> {
    doc.lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| `sqsaga_")?.split('|');
            let name = format!("sqsaga_{}", cells.next()?.trim().trim_end_matches('`'));
            Some((name, cells.next()?.trim().to_string()))
        })
        .collect()
}

/// The families of the registries `sqsaga orchestrator` and `sqsaga worker`
/// build (with the AWS backend's counters), as their `/metrics` lists them.
async fn exported_families() -> BTreeSet<(String, String)> {
    use sqsaga_aws::RequestCounter;
    use sqsaga_embedded::{EmbeddedBackend, Sync};
    use sqsaga_http::Probe;
    use sqsaga_http::metrics::{assert_valid_exposition, encode, families};
    use sqsaga_orchestrator::{Definitions, FleetMonitor, Orchestrator, OrchestratorOptions, SystemClock};
    use sqsaga_runtime::metrics::{orchestrator_registry, worker_registry};
    use sqsaga_worker::{Participant, Worker, WorkerOptions};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Sync::Normal).unwrap();
    let requests = Some((Arc::new(RequestCounter::sqs()), Arc::new(RequestCounter::dynamodb())));
    let orchestrator = Orchestrator::new(
        Arc::new(Definitions::default()),
        backend.queue(),
        backend.store(),
        Arc::new(SystemClock),
        OrchestratorOptions::default(),
    );
    let fleet = Arc::new(FleetMonitor::observing(Arc::new(SystemClock)));
    // Queue depths: a series once a queue has been read.
    let depths = Arc::new(sqsaga_runtime::depths::QueueDepths::default());
    let names = sqsaga_runtime::depths::QueueDepths::queues("orchestrator", &[]);
    let template = sqsaga_queue::QueueSpec::named("template");
    sqsaga_orchestrator::ensure_queues(backend.queue().as_ref(), &Definitions::default(), &template).await.unwrap();
    depths.refresh(backend.queue().as_ref(), &names).await;
    let orchestrator = orchestrator_registry(&Probe::new(), "fp", &orchestrator, &fleet, requests.clone(), &depths);
    let participant = Arc::new(Participant::open(&dir.path().join("payment.db"), Sync::Normal).unwrap());
    let worker = Worker::new(WorkerOptions::new("payment", "payment-1"), backend.queue(), participant);
    // A labelled family is listed once it has a series: one step run.
    worker.stats().observe("payment.charge", std::time::Duration::from_millis(3));
    let worker = worker_registry(&Probe::new(), "payment", "fp", &worker, requests);
    let mut all = BTreeSet::new();
    for registry in [orchestrator, worker] {
        let text = encode(&registry);
        assert_valid_exposition(&text);
        all.extend(families(&text));
    }
    all
}

#[tokio::test]
async fn operations_md_lists_exactly_the_exported_metrics() {
    let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let documented = documented_families(&doc);
    let exported = exported_families().await;
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(undocumented.is_empty(), "metrics missing from docs/operations.md (name, type): {undocumented:?}");
    assert!(stale.is_empty(), "docs/operations.md lists metrics the processes do not export: {stale:?}");
}

/// Every metric the alerting rules (deploy/prometheus, the same groups as
/// the PrometheusRule) and the Grafana dashboard (deploy/grafana) query is
/// one docs/operations.md lists, so a renamed metric cannot silently
/// disable an alert or blank a panel.
#[test]
fn alerts_and_dashboard_query_only_documented_metrics() {
    let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let documented: BTreeSet<String> = documented_families(&doc).into_iter().map(|(name, _)| name).collect();
    for file in ["deploy/prometheus/sqsaga-rules.yml", "deploy/grafana/sqsaga.json"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file}: only {used:?} found");
        let unknown: Vec<&String> = used
            .iter()
            .filter(|m| {
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| m.strip_suffix(s)).unwrap_or(m);
                !documented.contains(*m) && !documented.contains(family)
            })
            .collect();
        assert!(unknown.is_empty(), "{file} queries metrics docs/operations.md does not list: {unknown:?}");
    }
}

/// The `sqsaga_…` identifiers in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("sqsaga_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}
