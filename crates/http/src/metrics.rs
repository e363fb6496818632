//! Metrics on `prometheus-client`: each process builds one
//! [`Registry`]; every component registers its own families in it where it
//! counts them (the worker's stats, the orchestrator's, the fleet monitor's),
//! values read from elsewhere at scrape time come from [`Collector`]s
//! (the probe below, saga counts by state, fleet gauges, AWS request
//! counts), and `/metrics` encodes the registry in the Prometheus text format
//! (0.0.4) with the crate's own encoder.
//!
//! Naming scheme, one for the whole project (the docs list every name; a
//! test walks the registries the processes build and compares):
//! - counters: `sqsaga_<noun>_<unit>_total`. Register them *without*
//!   `_total`: the encoder appends it (and refuses names ending in it in
//!   debug builds);
//! - histograms: `sqsaga_<noun>_duration_seconds`, buckets in seconds;
//! - gauges: `sqsaga_<noun>[_<unit>]` (`sqsaga_ready`).
//!
//! Help texts are registered without a final period: the registry adds one.
//! [`gauges`] and [`counters`] write a collector's family the same way.
//!
//! This module knows nothing of HTTP; the router encodes what it is given.

use std::process::{Command, Stdio};

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{EncodeGaugeValue, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::registry::Registry;

/// Content type of the Prometheus text exposition format (0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry as Prometheus text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail; an encoder error would be a bug in
    // a collector, and half an exposition is still better than none.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "Cannot encode the metrics.");
    }
    out
}

/// Writes one gauge family of a collector, a sample per label set. The
/// family is written even without samples, so it is always listed. Counts
/// and flags are best given as `i64` (`1`, not `1.0`).
pub fn gauges<S: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, V)>,
) -> Result<(), std::fmt::Error> {
    let help = format!("{help}.");
    let mut family = encoder.encode_descriptor(name, &help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one counter family of a collector; `name` is without `_total`,
/// which the encoder appends.
pub fn counters<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, u64)>,
) -> Result<(), std::fmt::Error> {
    let help = format!("{help}.");
    let mut family = encoder.encode_descriptor(name, &help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// What `promtool check metrics` said about an exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promtool {
    /// Valid, lint included.
    Valid,
    /// promtool's complaints.
    Invalid(String),
    /// promtool is not installed (Debian: `apt-get install prometheus`).
    Unavailable,
}

/// Runs `promtool check metrics` over `text`, for tests: an exposition
/// Prometheus itself parses and lints clean.
pub fn promtool_check(text: &str) -> Promtool {
    use std::io::Write as _;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else { return Promtool::Unavailable };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => Promtool::Valid,
        Ok(out) => Promtool::Invalid(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Promtool::Invalid(format!("promtool failed: {e}")),
    }
}

/// For tests: panics unless promtool accepts `text`; says so on stderr
/// (visible with `--no-capture`, and in the failure output of the test)
/// when promtool is missing.
pub fn assert_valid_exposition(text: &str) {
    match promtool_check(text) {
        Promtool::Valid => {}
        Promtool::Unavailable => {
            eprintln!("SKIPPED promtool check: promtool not installed (apt-get install prometheus)");
        }
        Promtool::Invalid(why) => panic!("promtool check metrics failed:\n{why}\n--- exposition:\n{text}"),
    }
}

/// `# TYPE` lines of an exposition: `(family name, type)`, in order. What
/// the docs test compares with docs/operations.md.
pub fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;

    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            gauges(&mut encoder, "sqsaga_odd", "Back\\slash\nnewline", [([("v", "a\\b\"c\nd")], f64::INFINITY)])?;
            counters(&mut encoder, "sqsaga_things", "Things", [([("kind", "x")], 3)])?;
            gauges(&mut encoder, "sqsaga_empty", "No samples yet", Vec::<([(&str, &str); 0], i64)>::new())
        }
    }

    #[test]
    fn names_come_out_as_the_scheme_says_and_promtool_agrees() {
        let mut registry = Registry::default();
        let received = Counter::<u64>::default();
        received.inc_by(7);
        registry.register("sqsaga_messages_received", "Messages received", received);
        let latency =
            Family::<[(&str, &str); 1], Histogram, _>::new_with_constructor(|| Histogram::new([0.01, 0.1, 1.0]));
        latency.get_or_create(&[("command", "x")]).observe(0.05);
        registry.register("sqsaga_step_duration_seconds", "Step latency", latency);
        registry.register_collector(Box::new(Fixed));
        let text = encode(&registry);
        assert_eq!(
            families(&text),
            [
                ("sqsaga_messages_received_total", "counter"),
                ("sqsaga_step_duration_seconds", "histogram"),
                ("sqsaga_odd", "gauge"),
                ("sqsaga_things_total", "counter"),
                ("sqsaga_empty", "gauge"),
            ]
            .map(|(n, k)| (n.to_string(), k.to_string()))
        );
        for line in [
            "# HELP sqsaga_messages_received_total Messages received.",
            "sqsaga_messages_received_total 7",
            "sqsaga_step_duration_seconds_bucket{command=\"x\",le=\"0.1\"} 1",
            "sqsaga_step_duration_seconds_bucket{command=\"x\",le=\"+Inf\"} 1",
            "# HELP sqsaga_odd Back\\\\slash\\nnewline.",
            "sqsaga_odd{v=\"a\\\\b\\\"c\\nd\"} +Inf",
            "sqsaga_things_total{kind=\"x\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert_valid_exposition(&text);
    }
}
