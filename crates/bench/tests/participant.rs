//! `bench participant` end to end with tiny sizes, against the machine's
//! PostgreSQL server (`SQSAGA_TEST_POSTGRES`, default 127.0.0.1:5432) and
//! its pgbench: both phases finish with one effect per step, grouping takes
//! fewer server transactions than steps, one transaction per command takes
//! at least one per step. Not timed: the figures themselves are not checked.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use sqsaga_bench::{BenchParticipantOptions, bench_participant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_participant_runs_end_to_end() {
    let options = BenchParticipantOptions {
        url: sqsaga_postgres::scratch::server_url(),
        clients: 2,
        steps: 60,
        pgbench_secs: 1,
        ..BenchParticipantOptions::default()
    };
    let report = bench_participant(&options).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.effects_ok(), "{report}");
    assert_eq!(report.grouped.steps, 60, "{report}");
    let per_command = report.per_command.as_ref().unwrap();
    assert_eq!(per_command.steps, 60, "{report}");
    assert!(per_command.transactions_per_step >= 1.0, "{report}");
    assert!(report.grouped.transactions_per_step < 1.0, "{report}");
    assert!(report.single.tps > 0.0 && report.grouped.steps_per_s > 0.0, "{report}");
    let other = BenchParticipantOptions { db: "sqlite".into(), ..options };
    assert!(bench_participant(&other).await.unwrap_err().to_string().contains("only `postgres`"));
}
