//! Prometheus text exposition (format 0.0.4), written the same way by every
//! crate: [`Text`] writes families with `# HELP`/`# TYPE` once each and
//! samples grouped under them; [`Counter`], [`Histogram`] and
//! [`LabeledHistograms`] are the lock-free (or nearly) recorders behind them;
//! [`validate_exposition`] is the checker tests run over `/metrics`.
//!
//! Naming scheme, one for the whole project:
//! - counters: `sqsaga_<noun>_<unit>_total` (`sqsaga_messages_received_total`,
//!   `sqsaga_steps_failed_total`);
//! - histograms: `sqsaga_<noun>_duration_seconds`, buckets in seconds;
//! - gauges: `sqsaga_<noun>[_<unit>]` (`sqsaga_ready`, `sqsaga_queue_depth_messages`).
//!
//! This module knows nothing of HTTP; the router only concatenates what
//! [`MetricsSource`]s write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Something that has metrics to expose: appends its families to `out` in
/// Prometheus text format, typically through [`Text`]. Each metric family
/// belongs to exactly one source (a family split over two sources would get
/// two `# TYPE` lines).
pub trait MetricsSource: Send + Sync + 'static {
    /// Appends this source's metrics to `out`.
    fn render(&self, out: &mut String);
}

/// Latency buckets in seconds for handlers and steps: 5 ms to 60 s, roughly
/// ×2.5 apart, which covers a local SQLite commit and a slow payment API.
pub const DEFAULT_LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// One metric family being written: metadata plus its samples so far.
struct Family {
    name: String,
    help: String,
    kind: &'static str,
    samples: String,
}

/// A writer of metric families into a `String`. Samples may be added in any
/// order; on [`Text::finish`] (or drop) each family is written once, `# HELP`
/// and `# TYPE` first, its samples together — the format requires that.
pub struct Text<'a> {
    /// Where the finished exposition goes.
    out: &'a mut String,
    /// Families in first-use order, so output order is stable.
    families: Vec<Family>,
}

impl<'a> Text<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        Text { out, families: Vec::new() }
    }

    /// One sample of counter `name` (which should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        let samples = &mut self.family(name, help, "counter").samples;
        sample(samples, name, labels, None, &value.to_string());
    }

    /// One sample of gauge `name`.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let samples = &mut self.family(name, help, "gauge").samples;
        sample(samples, name, labels, None, &format_f64(value));
    }

    /// One histogram series. `counts[i]` is the number of observations in
    /// bucket `i` alone — above `buckets[i - 1]`, at most `buckets[i]` — as
    /// [`Histogram::snapshot`] gives them; this writes the cumulative `le`
    /// series, `+Inf` (= `count`), `_sum` and `_count`.
    #[allow(clippy::too_many_arguments, reason = "mirrors the exposition's parts one to one")]
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[f64],
        counts: &[u64],
        sum: f64,
        count: u64,
    ) {
        let samples = &mut self.family(name, help, "histogram").samples;
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, n) in buckets.iter().zip(counts) {
            cumulative = cumulative.saturating_add(*n);
            let le = format_f64(*bound);
            sample(samples, &bucket_name, labels, Some(&le), &cumulative.to_string());
        }
        // A snapshot taken while observations land can be a hair
        // inconsistent; never let +Inf fall below a finite bucket.
        let count = count.max(cumulative);
        sample(samples, &bucket_name, labels, Some("+Inf"), &count.to_string());
        sample(samples, &format!("{name}_sum"), labels, None, &format_f64(sum));
        sample(samples, &format!("{name}_count"), labels, None, &count.to_string());
    }

    /// [`Text::histogram`] from a snapshot.
    pub fn histogram_snapshot(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        snapshot: &HistogramSnapshot,
    ) {
        let HistogramSnapshot { bounds, counts, sum, count } = snapshot;
        self.histogram(name, help, labels, bounds, counts, *sum, *count);
    }

    /// Writes every family out. Dropping the writer does the same.
    pub fn finish(self) {}

    fn family(&mut self, name: &str, help: &str, kind: &'static str) -> &mut Family {
        let index = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: String::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[index]
    }
}

impl Drop for Text<'_> {
    fn drop(&mut self) {
        for family in self.families.drain(..) {
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(self.out, "# HELP {} {help}", family.name);
            let _ = writeln!(self.out, "# TYPE {} {}", family.name, family.kind);
            self.out.push_str(&family.samples);
        }
    }
}

/// Appends `name{labels,le="..."} value\n`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], le: Option<&str>, value: &str) {
    out.push_str(name);
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    let mut first = true;
    for (label, value) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{label}=\"{}\"", escape_label_value(value));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Escapes a label value as the text format requires: backslash, double
/// quote and newline.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as the text format spells it (`+Inf`, `-Inf`, `NaN`, `0.25`, `1`).
pub fn format_f64(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        value.to_string()
    }
}

/// A monotonically increasing count, for `_total` metrics.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram with fixed bucket bounds in seconds. Recording is
/// two relaxed atomic adds and takes no lock, so hot paths can observe
/// freely.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending, finite.
    bounds: Box<[f64]>,
    /// Observations per bucket; one more than `bounds`, the last for
    /// observations above every bound.
    counts: Box<[AtomicU64]>,
    /// Sum of observations in nanoseconds (an integer so it can be atomic;
    /// u64 nanoseconds hold 584 years).
    sum_nanos: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds in seconds, ascending.
    pub bounds: Vec<f64>,
    /// Observations per bucket, not cumulative; same length as `bounds`.
    pub counts: Vec<u64>,
    /// Sum of all observations in seconds.
    pub sum: f64,
    /// Number of observations, including those above the last bound.
    pub count: u64,
}

impl Histogram {
    /// A histogram over `bounds` (seconds). Bounds are sorted and
    /// deduplicated; non-finite ones are dropped (`+Inf` is implicit).
    pub fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds: bounds.into(), counts, sum_nanos: AtomicU64::new(0) }
    }

    /// A histogram over [`DEFAULT_LATENCY_BUCKETS`].
    pub fn latency() -> Self {
        Self::new(DEFAULT_LATENCY_BUCKETS)
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        // `le` semantics: a value equal to a bound belongs to that bucket.
        let index = self.bounds.partition_point(|bound| *bound < seconds);
        if let Some(slot) = self.counts.get(index) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The current counts. `count` is the sum of the buckets read, so the
    /// snapshot is self-consistent even while observations land.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let all: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let count = all.iter().fold(0u64, |acc, n| acc.saturating_add(*n));
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: all[..self.bounds.len()].to_vec(),
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64(),
            count,
        }
    }
}

/// One histogram per label value (per-command latency, say), created on
/// first use. The map is behind a mutex; the recording itself is atomic.
#[derive(Debug)]
pub struct LabeledHistograms {
    /// Bucket bounds shared by every series.
    bounds: Vec<f64>,
    /// The series, by label value.
    series: Mutex<BTreeMap<String, Histogram>>,
}

impl LabeledHistograms {
    /// At most this many distinct label values; later ones are counted under
    /// [`LabeledHistograms::OVERFLOW_LABEL`], so a flood of bogus command
    /// names cannot blow up memory or Prometheus' cardinality.
    pub const MAX_SERIES: usize = 256;
    /// Label value that collects observations beyond [`Self::MAX_SERIES`].
    pub const OVERFLOW_LABEL: &'static str = "_other";

    /// A family whose series all use `bounds` (seconds).
    pub fn new(bounds: &[f64]) -> Self {
        LabeledHistograms { bounds: bounds.to_vec(), series: Mutex::new(BTreeMap::new()) }
    }

    /// A family over [`DEFAULT_LATENCY_BUCKETS`].
    pub fn latency() -> Self {
        Self::new(DEFAULT_LATENCY_BUCKETS)
    }

    /// Records one observation for `label`.
    pub fn observe(&self, label: &str, elapsed: Duration) {
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = series.get(label) {
            h.observe(elapsed);
            return;
        }
        let label = if series.len() < Self::MAX_SERIES { label } else { Self::OVERFLOW_LABEL };
        series.entry(label.to_string()).or_insert_with(|| Histogram::new(&self.bounds)).observe(elapsed);
    }

    /// A snapshot of every series, by label value.
    pub fn snapshots(&self) -> Vec<(String, HistogramSnapshot)> {
        let series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        series.iter().map(|(label, h)| (label.clone(), h.snapshot())).collect()
    }

    /// Writes every series as histogram `name` with label `label_name`.
    pub fn render(&self, text: &mut Text<'_>, name: &str, help: &str, label_name: &str) {
        for (label, snapshot) in self.snapshots() {
            text.histogram_snapshot(name, help, &[(label_name, &label)], &snapshot);
        }
    }
}

/// Checks Prometheus text exposition: every sample line is
/// `name{label="value",...} value`, each family has `# TYPE` (and at most
/// one) before its samples, families are contiguous, histograms end in
/// `+Inf`, and counters follow the `_total` naming scheme. Returns every
/// problem, with line numbers. Other crates run it over their `render`
/// output in tests.
pub fn validate_exposition(text: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut inf_seen: BTreeSet<String> = BTreeSet::new();
    let mut enter = |family: &str, n: usize, problems: &mut Vec<String>| {
        if current.as_deref() != Some(family) {
            if let Some(previous) = current.replace(family.to_string()) {
                finished.insert(previous);
            }
            if finished.contains(family) {
                problems.push(format!("line {n}: family `{family}` is split (not contiguous)"));
            }
        }
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (directive, name, arg) = (parts.next(), parts.next(), parts.next());
            match (directive, name) {
                (Some("HELP"), Some(name)) => {
                    enter(name, n, &mut problems);
                    if !helps.insert(name.to_string()) {
                        problems.push(format!("line {n}: second HELP for `{name}`"));
                    }
                }
                (Some("TYPE"), Some(name)) => {
                    enter(name, n, &mut problems);
                    let kind = arg.unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        problems.push(format!("line {n}: unknown type `{kind}` for `{name}`"));
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        problems.push(format!("line {n}: counter `{name}` should end in `_total`"));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        problems.push(format!("line {n}: second TYPE for `{name}`"));
                    }
                }
                _ => {} // Other comments are allowed.
            }
            continue;
        }
        let Some((name, labels)) = parse_sample(line) else {
            problems.push(format!("line {n}: not `name{{labels}} value`: {line}"));
            continue;
        };
        let family = family_of(&name, &types);
        match &family {
            Some(family) => enter(family, n, &mut problems),
            None => problems.push(format!("line {n}: sample `{name}` has no TYPE before it")),
        }
        if let Some(family) = family
            && name.ends_with("_bucket")
            && labels.iter().any(|(k, v)| k == "le" && v == "+Inf")
        {
            inf_seen.insert(family);
        }
    }
    for (name, kind) in &types {
        if kind == "histogram" && !inf_seen.contains(name) {
            problems.push(format!("histogram `{name}` has no le=\"+Inf\" bucket"));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The family a sample belongs to: its own name, or for histograms and
/// summaries the name without `_bucket`/`_sum`/`_count`.
fn family_of(sample: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(sample) {
        return Some(sample.to_string());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = sample.strip_suffix(suffix)?;
        matches!(types.get(base).map(String::as_str), Some("histogram" | "summary")).then(|| base.to_string())
    })
}

/// Parses `name{a="x",b="y"} value [timestamp]` into the name and labels.
fn parse_sample(line: &str) -> Option<(String, Vec<(String, String)>)> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            // Label name up to '=' (or '}' for an empty set / trailing comma).
            let start = chars.peek()?.0;
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c == '=' || c == '}' {
                    end = i;
                    break;
                }
                chars.next();
            }
            let (_, c) = chars.next()?;
            if c == '}' {
                if end != start {
                    return None;
                }
                rest = &after[end + 1..];
                break;
            }
            let label = &after[start..end];
            if !is_label_name(label) || chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return None,
                    },
                    '\n' => return None,
                    c => value.push(c),
                }
            }
            labels.push((label.to_string(), value));
            match chars.next()? {
                (_, ',') => continue,
                (i, '}') => {
                    rest = &after[i + 1..];
                    break;
                }
                _ => return None,
            }
        }
    }
    let mut fields = rest.strip_prefix(' ')?.split(' ');
    let value = fields.next()?;
    let value_ok = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
    let timestamp_ok = fields.next().is_none_or(|t| t.parse::<i64>().is_ok());
    (value_ok && timestamp_ok && fields.next().is_none()).then_some((name.to_string(), labels))
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(write: impl FnOnce(&mut Text<'_>)) -> String {
        let mut out = String::new();
        let mut text = Text::new(&mut out);
        write(&mut text);
        text.finish();
        out
    }

    #[test]
    fn families_are_written_once_and_grouped() {
        let out = render(|t| {
            t.counter("sqsaga_messages_received_total", "Messages received.", &[("queue", "a")], 3);
            t.gauge("sqsaga_ready", "1 when ready.", &[], 1.0);
            t.counter("sqsaga_messages_received_total", "Messages received.", &[("queue", "b")], 4);
        });
        assert_eq!(
            out,
            "# HELP sqsaga_messages_received_total Messages received.\n\
             # TYPE sqsaga_messages_received_total counter\n\
             sqsaga_messages_received_total{queue=\"a\"} 3\n\
             sqsaga_messages_received_total{queue=\"b\"} 4\n\
             # HELP sqsaga_ready 1 when ready.\n\
             # TYPE sqsaga_ready gauge\n\
             sqsaga_ready 1\n"
        );
        assert_eq!(validate_exposition(&out), Ok(()));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let out = render(|t| {
            t.gauge("sqsaga_odd", "Back\\slash\nnewline.", &[("v", "a\\b\"c\nd")], f64::INFINITY);
        });
        assert!(out.contains("# HELP sqsaga_odd Back\\\\slash\\nnewline.\n"), "{out}");
        assert!(out.contains("sqsaga_odd{v=\"a\\\\b\\\"c\\nd\"} +Inf\n"), "{out}");
        assert_eq!(validate_exposition(&out), Ok(()));
        let (_, labels) = parse_sample("sqsaga_odd{v=\"a\\\\b\\\"c\\nd\"} 1").unwrap_or_default();
        assert_eq!(labels, vec![("v".to_string(), "a\\b\"c\nd".to_string())]);
    }

    #[test]
    fn histograms_are_cumulative_and_consistent() {
        let h = Histogram::new(&[0.1, 0.01, 1.0, f64::INFINITY]);
        for ms in [5, 10, 50, 100, 2000] {
            h.observe(Duration::from_millis(ms));
        }
        let snap = h.snapshot();
        assert_eq!(snap.bounds, vec![0.01, 0.1, 1.0]);
        assert_eq!(snap.counts, vec![2, 2, 0], "a value equal to a bound falls in that bucket");
        assert_eq!(snap.count, 5);
        assert!((snap.sum - 2.165).abs() < 1e-9, "{}", snap.sum);
        let out =
            render(|t| t.histogram_snapshot("sqsaga_step_duration_seconds", "Step latency.", &[("step", "x")], &snap));
        let expected = [
            "sqsaga_step_duration_seconds_bucket{step=\"x\",le=\"0.01\"} 2",
            "sqsaga_step_duration_seconds_bucket{step=\"x\",le=\"0.1\"} 4",
            "sqsaga_step_duration_seconds_bucket{step=\"x\",le=\"1\"} 4",
            "sqsaga_step_duration_seconds_bucket{step=\"x\",le=\"+Inf\"} 5",
            "sqsaga_step_duration_seconds_sum{step=\"x\"} 2.165",
            "sqsaga_step_duration_seconds_count{step=\"x\"} 5",
        ];
        for line in expected {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
        assert_eq!(validate_exposition(&out), Ok(()));
    }

    #[test]
    fn labeled_histograms_cap_their_cardinality() {
        let family = LabeledHistograms::new(&[1.0]);
        for i in 0..LabeledHistograms::MAX_SERIES + 10 {
            family.observe(&format!("cmd-{i}"), Duration::from_millis(1));
        }
        family.observe("cmd-0", Duration::from_millis(1));
        let snaps = family.snapshots();
        assert_eq!(snaps.len(), LabeledHistograms::MAX_SERIES + 1);
        let count = |label: &str| snaps.iter().find(|(l, _)| l == label).map(|(_, s)| s.count);
        assert_eq!(count("cmd-0"), Some(2));
        assert_eq!(count(LabeledHistograms::OVERFLOW_LABEL), Some(10));
        let out = render(|t| family.render(t, "sqsaga_command_duration_seconds", "Handler latency.", "command"));
        assert_eq!(out.matches("# TYPE").count(), 1);
        assert_eq!(validate_exposition(&out), Ok(()));
    }

    #[test]
    fn the_checker_rejects_bad_expositions() {
        let cases = [
            ("sqsaga_x 1\n", "has no TYPE before it"),
            ("# TYPE sqsaga_x gauge\n# TYPE sqsaga_x gauge\nsqsaga_x 1\n", "second TYPE"),
            ("# TYPE sqsaga_x gauge\nsqsaga_x{a=\"1\" 1\n", "not `name{labels} value`"),
            ("# TYPE sqsaga_x gauge\nsqsaga_x{a=1} 1\n", "not `name{labels} value`"),
            ("# TYPE sqsaga_x gauge\nsqsaga_x one\n", "not `name{labels} value`"),
            ("# TYPE sqsaga_x_count counter\nsqsaga_x_count 1\n", "should end in `_total`"),
            ("# TYPE sqsaga_h histogram\nsqsaga_h_bucket{le=\"1\"} 1\nsqsaga_h_count 1\n", "no le=\"+Inf\""),
            ("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n", "family `a` is split"),
        ];
        for (text, want) in cases {
            let problems = validate_exposition(text).err().unwrap_or_default();
            assert!(problems.iter().any(|p| p.contains(want)), "{text:?}: {problems:?}");
        }
        assert_eq!(validate_exposition("# TYPE a gauge\na{} 1 1700000000000\n"), Ok(()));
    }

    #[test]
    fn counters_count() {
        let c = Counter::new();
        c.inc();
        c.add(4);
        assert_eq!(c.get(), 5);
    }
}
