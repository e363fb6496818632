//! The scaling model behind `docs/scaling.md`: what 1k, 10k and 50k steps/s
//! ask of SQS, DynamoDB and the orchestrator, computed from per-step
//! constants, and which limit binds first. `sqsaga bench scaling` prints the
//! document; a test (`tests/scaling.rs`) fails when the file on disk is not
//! what the constants give, so the document cannot drift from them.
//!
//! The constants are the store's own (`sqsaga_aws::item`: index shards,
//! writes and reads per step) or measured (`sqsaga bench sqs`, `sqsaga
//! bench embedded`); each says where it comes from.

use std::fmt::Write as _;

/// Steps per order saga, over the benchmark's mix of completed and
/// compensated orders (`sqsaga bench sqs`: 814 steps for 300 sagas).
pub const STEPS_PER_SAGA: f64 = 2.7;

/// Throughputs the document covers, steps per second.
pub const RATES: [u64; 3] = [1_000, 10_000, 50_000];

/// What one saga step costs, and what the services allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// SQS requests per step on the orchestrator queue (replies: sent by a
    /// worker, received and deleted by the orchestrator; start requests).
    pub sqs_orchestrator_queue_per_step: f64,
    /// SQS requests per step over all worker queues (commands).
    pub sqs_worker_queues_per_step: f64,
    /// Worker queues the steps spread over (the order saga has three).
    pub worker_queues: u32,
    /// DynamoDB write units per step on the table (commit, outbox clear).
    pub table_wru_per_step: f64,
    /// Read units per step on the table (loads, consistent re-reads).
    pub table_rru_per_step: f64,
    /// Write units per step per index, by index name.
    pub index_wru_per_step: Vec<(&'static str, f64)>,
    /// Read units per step on the indexes (timer and sweeper polls; at
    /// scale they are a constant per replica, so they shrink per step).
    pub index_rru_per_step: f64,
    /// Partition-key values each index's writes spread over.
    pub index_shards: u32,
    /// How long a message stays in flight (received, not yet deleted), s:
    /// processing plus the delete window of the `cost` preset.
    pub in_flight_s: f64,
    /// Orchestrator CPU per step, µs.
    pub orchestrator_cpu_us_per_step: f64,
    /// vCPUs per orchestrator replica, and the utilisation to plan for.
    pub replica_vcpus: f64,
    pub replica_utilisation: f64,
}

/// DynamoDB: write units per second one partition serves.
pub const PARTITION_WRU: f64 = 1_000.0;
/// DynamoDB: read units per second one partition serves.
pub const PARTITION_RRU: f64 = 3_000.0;
/// DynamoDB on-demand: default per-table quota of write and of read request
/// units per second (an account quota; raised on request).
pub const TABLE_QUOTA_UNITS: f64 = 40_000.0;
/// SQS standard queue: messages in flight at most (received, not deleted).
pub const SQS_IN_FLIGHT_LIMIT: f64 = 120_000.0;

impl Model {
    /// The store's own per-step write and read constants
    /// (`sqsaga_aws::item::cost`: happy path, items of at most 1 KB) and
    /// index shards ([`sqsaga_aws::INDEX_SHARDS`]); the SQS figures
    /// `sqsaga bench sqs --sagas 300 --no-naive` measured (message operations,
    /// readiness checks left out: they are per process, not per step); and
    /// `sqsaga bench embedded`'s CPU per step (the whole stack on two cores:
    /// an upper bound for the orchestrator alone, a lower one for AWS mode's
    /// TLS and request signing).
    pub fn current() -> Model {
        use sqsaga_aws::item::cost;
        let per_saga = |writes: u32| f64::from(writes) / STEPS_PER_SAGA;
        Model {
            sqs_orchestrator_queue_per_step: 0.42,
            sqs_worker_queues_per_step: 0.41,
            worker_queues: 3,
            table_wru_per_step: f64::from(cost::TABLE_WRITES_PER_STEP) + per_saga(cost::TABLE_WRITES_PER_SAGA),
            table_rru_per_step: cost::READS_PER_STEP,
            index_wru_per_step: vec![
                (sqsaga_aws::DUE_INDEX, per_saga(cost::DUE_INDEX_WRITES_PER_SAGA)),
                (sqsaga_aws::END_INDEX, per_saga(cost::END_INDEX_WRITES_PER_SAGA)),
            ],
            index_rru_per_step: 0.0,
            index_shards: sqsaga_aws::INDEX_SHARDS,
            in_flight_s: 2.2,
            orchestrator_cpu_us_per_step: 185.0,
            replica_vcpus: 1.0,
            replica_utilisation: 0.7,
        }
    }

    /// The figures at `steps` per second.
    pub fn at(&self, steps: u64) -> Row {
        let r = steps as f64;
        let index_wru: f64 = self.index_wru_per_step.iter().map(|(_, w)| w).sum();
        let hottest_index = self.index_wru_per_step.iter().map(|(_, w)| *w).fold(0.0, f64::max);
        let table_wru = r * self.table_wru_per_step;
        let table_rru = r * self.table_rru_per_step;
        let partitions = (table_wru / PARTITION_WRU).max(table_rru / PARTITION_RRU).ceil().max(1.0);
        let cores = r * self.orchestrator_cpu_us_per_step / 1e6;
        let replicas = (cores / (self.replica_vcpus * self.replica_utilisation)).ceil().max(1.0);
        let mut row = Row {
            steps,
            sqs_orchestrator_queue: r * self.sqs_orchestrator_queue_per_step,
            sqs_per_worker_queue: r * self.sqs_worker_queues_per_step / f64::from(self.worker_queues.max(1)),
            orchestrator_in_flight: r * self.in_flight_s,
            table_wru,
            table_rru,
            index_wru: r * index_wru,
            index_rru: r * self.index_rru_per_step,
            table_partitions: partitions,
            wru_per_table_partition: table_wru / partitions,
            wru_per_index_shard: r * hottest_index / f64::from(self.index_shards.max(1)),
            replicas,
            binding: Vec::new(),
        };
        row.binding = row.limits();
        row
    }
}

/// One throughput's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub steps: u64,
    /// SQS requests/s on the orchestrator queue.
    pub sqs_orchestrator_queue: f64,
    /// SQS requests/s on each worker queue.
    pub sqs_per_worker_queue: f64,
    /// Messages in flight on the orchestrator queue.
    pub orchestrator_in_flight: f64,
    pub table_wru: f64,
    pub table_rru: f64,
    /// Write and read units/s over all indexes.
    pub index_wru: f64,
    pub index_rru: f64,
    /// Table partitions the load needs.
    pub table_partitions: f64,
    pub wru_per_table_partition: f64,
    /// Write units/s on the busiest index's busiest shard.
    pub wru_per_index_shard: f64,
    /// Orchestrator replicas needed.
    pub replicas: f64,
    /// The limits this row exceeds or comes within 80% of, worst first.
    pub binding: Vec<String>,
}

impl Row {
    fn limits(&self) -> Vec<String> {
        let mut found: Vec<(f64, String)> = Vec::new();
        let mut check = |load: f64, limit: f64, what: &str| {
            let share = load / limit;
            if share >= 0.8 {
                let verdict = if share > 1.0 { "over" } else { "near" };
                found.push((share, format!("{what} {verdict} ({:.0}%)", share * 100.0)));
            }
        };
        check(self.wru_per_index_shard, PARTITION_WRU, "index partition 1,000 WRU/s");
        check(self.table_wru + self.index_wru, TABLE_QUOTA_UNITS, "table quota 40,000 WRU/s");
        check(self.table_rru + self.index_rru, TABLE_QUOTA_UNITS, "table quota 40,000 RRU/s");
        check(self.orchestrator_in_flight, SQS_IN_FLIGHT_LIMIT, "SQS in-flight 120,000");
        found.sort_by(|a, b| b.0.total_cmp(&a.0));
        found.into_iter().map(|(_, s)| s).collect()
    }
}

/// How to regenerate the document.
pub const REGENERATE: &str = "cargo build -p sqsaga-cli && target/debug/sqsaga bench scaling > docs/scaling.md";

fn n(x: f64) -> String {
    let rounded = x.round() as i64;
    let digits = rounded.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

/// docs/scaling.md for `model`.
pub fn markdown(model: &Model) -> String {
    let mut md = String::new();
    let m = model;
    let _ = writeln!(md, "# Scaling\n");
    let _ = writeln!(
        md,
        "<!-- Generated by `sqsaga bench scaling` from crates/bench/src/scaling.rs; \
         a test fails when this file differs. Regenerate: {REGENERATE} -->\n"
    );
    md.push_str(
        "What a given throughput asks of SQS, DynamoDB and the orchestrator in AWS mode, \
         computed from per-step constants (below), and which limit binds first. A step is \
         one command a worker executed (the order saga has three or four per saga).\n\n",
    );
    let _ = writeln!(md, "## At 1k, 10k and 50k steps/s\n");
    let _ = writeln!(
        md,
        "| steps/s | SQS req/s, orchestrator queue | SQS req/s, each worker queue | in flight, orchestrator queue \
         | table WRU/s | table RRU/s | index WRU/s (all) | table partitions | WRU/s per table partition \
         | WRU/s per index shard (busiest) | orchestrator replicas | limits that bind |"
    );
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for rate in RATES {
        let r = m.at(rate);
        let binding = if r.binding.is_empty() { "none".to_string() } else { r.binding.join("; ") };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {binding} |",
            n(rate as f64),
            n(r.sqs_orchestrator_queue),
            n(r.sqs_per_worker_queue),
            n(r.orchestrator_in_flight),
            n(r.table_wru),
            n(r.table_rru),
            n(r.index_wru),
            n(r.table_partitions),
            n(r.wru_per_table_partition),
            n(r.wru_per_index_shard),
            n(r.replicas),
        );
    }
    let _ = writeln!(md, "\n## The constants\n");
    let _ = writeln!(md, "| constant | value | source |");
    let _ = writeln!(md, "| --- | ---: | --- |");
    let rows: Vec<(String, String, &str)> = vec![
        (
            "SQS requests per step, orchestrator queue".into(),
            format!("{}", m.sqs_orchestrator_queue_per_step),
            "`sqsaga bench sqs` (`sqs_requests_per_step_by_queue`); full batches give 0.3",
        ),
        (
            format!("SQS requests per step, {} worker queues together", m.worker_queues),
            format!("{}", m.sqs_worker_queues_per_step),
            "the same; full batches give 0.3",
        ),
        (
            "table WRU per step".into(),
            format!("{:.3}", m.table_wru_per_step),
            "`sqsaga_aws::item::cost`: one ≤ 1 KB write per step, one per saga (the create)",
        ),
        ("table RRU per step".into(), format!("{}", m.table_rru_per_step), "the same: one consistent read per step"),
        (
            "index WRU per step".into(),
            m.index_wru_per_step.iter().map(|(i, w)| format!("{i} {w:.3}")).collect::<Vec<_>>().join(", "),
            "the same: per saga, not per step (2.7 steps per order saga)",
        ),
        (
            "index RRU per step".into(),
            format!("{}", m.index_rru_per_step),
            "timer and sweeper polls are per replica, not per step",
        ),
        ("partition-key values per index".into(), format!("{}", m.index_shards), "`sqsaga_aws::INDEX_SHARDS`"),
        (
            "seconds a message is in flight".into(),
            format!("{}", m.in_flight_s),
            "processing plus the `cost` preset's 2 s delete window",
        ),
        (
            "orchestrator CPU per step".into(),
            format!("{} µs", m.orchestrator_cpu_us_per_step),
            "`sqsaga bench embedded` (whole stack, 2 cores): a proxy",
        ),
        (
            "vCPUs per replica, utilisation planned".into(),
            format!("{}, {}", m.replica_vcpus, m.replica_utilisation),
            "a choice",
        ),
    ];
    for (what, value, source) in rows {
        let _ = writeln!(md, "| {what} | {value} | {source} |");
    }
    md.push_str(
        "\n## The limits\n\n\
         - **DynamoDB partition: 1,000 WRU/s and 3,000 RRU/s.** The table's items spread over \
         partitions by saga id, so the table adds partitions as load grows; an index partition-key \
         value lives on one partition, so each index's writes are capped at 1,000 WRU/s per shard \
         (partition-key value): the store spreads each index over `INDEX_SHARDS` values.\n\
         - **DynamoDB on-demand table quota: 40,000 WRU/s and 40,000 RRU/s by default** (indexes \
         count against the table), raised through Service Quotas. On-demand also doubles a \
         table's previous peak at most every 30 minutes: ramp up, or pre-warm with warm throughput.\n\
         - **SQS standard queues: nearly unlimited requests per second** per queue and action. \
         FIFO queues (300 messages/s, 3,000 batched) are not used. A standard queue holds at \
         most **120,000 messages in flight** (received, not deleted): the orchestrator queue \
         carries every reply, held for processing plus the delete window.\n\
         - **No Lambda**: the orchestrator and workers are long-running processes, so there are \
         no concurrency quotas or cold starts; the orchestrator is scaled by replicas, each \
         with its own pollers. Its CPU per step is measured on the embedded backend, which \
         does the same decide-and-commit work over SQLite: AWS mode adds TLS and request \
         signing and removes SQLite, so treat the replica count as a floor.\n\
         - **Timer and sweeper polls** are per replica, not per step: they cost a constant \
         (see `sqsaga bench sqs`, idle figures) and vanish per step at scale.\n",
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model {
            sqs_orchestrator_queue_per_step: 0.3,
            sqs_worker_queues_per_step: 0.3,
            worker_queues: 3,
            table_wru_per_step: 2.0,
            table_rru_per_step: 1.0,
            index_wru_per_step: vec![("a", 1.0), ("b", 0.5)],
            index_rru_per_step: 0.0,
            index_shards: 1,
            in_flight_s: 2.0,
            orchestrator_cpu_us_per_step: 200.0,
            replica_vcpus: 1.0,
            replica_utilisation: 0.5,
        }
    }

    #[test]
    fn figures_scale_with_the_rate() {
        // (steps/s, index shards, SQS orchestrator queue, each worker queue, table partitions,
        //  WRU per index shard, replicas)
        let cases: &[(u64, u32, f64, f64, f64, f64, f64)] = &[
            (1_000, 1, 300.0, 100.0, 2.0, 1_000.0, 1.0),
            (10_000, 1, 3_000.0, 1_000.0, 20.0, 10_000.0, 4.0),
            (10_000, 16, 3_000.0, 1_000.0, 20.0, 625.0, 4.0),
            (50_000, 16, 15_000.0, 5_000.0, 100.0, 3_125.0, 20.0),
        ];
        for (rate, shards, orch, worker, partitions, per_shard, replicas) in cases {
            let m = Model { index_shards: *shards, ..model() };
            let r = m.at(*rate);
            let got = (
                r.sqs_orchestrator_queue,
                r.sqs_per_worker_queue,
                r.table_partitions,
                r.wru_per_index_shard,
                r.replicas,
            );
            assert_eq!(got, (*orch, *worker, *partitions, *per_shard, *replicas), "{rate} steps/s, {shards} shards");
        }
    }

    #[test]
    fn the_binding_limits_are_named_worst_first() {
        // (steps/s, index shards, limits)
        let cases: &[(u64, u32, &[&str])] = &[
            (500, 16, &[]),
            (1_000, 1, &["index partition 1,000 WRU/s near (100%)"]),
            (
                50_000,
                1,
                &[
                    "index partition 1,000 WRU/s over (5000%)",
                    "table quota 40,000 WRU/s over (438%)",
                    "table quota 40,000 RRU/s over (125%)",
                    "SQS in-flight 120,000 near (83%)",
                ],
            ),
        ];
        for (rate, shards, want) in cases {
            let r = Model { index_shards: *shards, ..model() }.at(*rate);
            assert_eq!(r.binding, *want, "{rate} steps/s, {shards} shards");
        }
    }

    #[test]
    fn numbers_print_with_thousands_separators() {
        let cases: &[(f64, &str)] = &[(0.4, "0"), (999.6, "1,000"), (1234567.0, "1,234,567"), (-4200.0, "-4,200")];
        for (x, want) in cases {
            assert_eq!(n(*x), *want, "{x}");
        }
    }
}
