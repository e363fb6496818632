//! The order demo with the Go payment service in place of the Rust one: the
//! orchestrator on the embedded backend with its SQS endpoint, the Rust
//! inventory and notification workers, and `participants/go` as `payment`
//! (its accounts, charges and merchant in PostgreSQL). Every saga ends,
//! and the demo's invariant checker — stock and money conserved, completed
//! orders fully done, compensated ones fully undone, nothing applied twice —
//! holds over the Go service's tables, copied into the payment database
//! file the checker reads.
#![allow(clippy::unwrap_used, reason = "tests: a failure is the test failing")]

use std::collections::BTreeMap;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqsaga_core::machine::SagaStatus;
use sqsaga_postgres::scratch::ScratchDb;
use sqsaga_runtime::{CancellationToken, run_orchestrator, run_worker};

mod support;

use support::{build, free_port, settings};

const ORDERS: usize = 60;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_demo_with_the_go_payment_service_keeps_its_invariants() {
    let binary = build();
    let db = ScratchDb::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = free_port();
    let base = [
        ("SQSAGA_DATA_DIR", dir.path().display().to_string()),
        ("SQSAGA_SQS_ENDPOINT_ADDR", format!("127.0.0.1:{endpoint}")),
        ("SQSAGA_WAIT_TIME", "1s".to_string()),
    ];
    let orchestrator_settings = settings(&base);
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let defs = Arc::new(sqsaga_order::run::definitions().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tasks.push(tokio::spawn(run_orchestrator(orchestrator_settings.clone(), defs, listener, shutdown.clone())));

    // Stock and accounts: the Rust services' files, and the Go service's tables.
    let (initial, inputs) = sqsaga_order::generate_orders(ORDERS, 7);
    sqsaga_order::seed_data(dir.path(), &initial).unwrap();
    let go = Killed(
        Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SQSAGA_SERVICE", "payment")
            .env("DATABASE_URL", format!("{}?sslmode=disable", db.url))
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{endpoint}"))
            .env("SQSAGA_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("SQSAGA_WAIT_TIME", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = pg(&db.url).await;
    let since = Instant::now();
    while client.simple_query("SELECT 1 FROM accounts LIMIT 1").await.is_err() {
        assert!(since.elapsed() < Duration::from_secs(30), "the Go participant did not create its tables");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (account, balance) in &initial.accounts {
        client.execute("INSERT INTO accounts (account, balance) VALUES ($1, $2)", &[account, balance]).await.unwrap();
    }

    for service in ["inventory", "notification"] {
        let mut env = base.to_vec();
        env.push(("SQSAGA_SERVICE", service.to_string()));
        env.retain(|(k, _)| *k != "SQSAGA_SQS_ENDPOINT_ADDR");
        let participant =
            sqsaga_order::open_participant(dir.path(), service, sqsaga_sqlite::Sync::Normal, 0.2, 42).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tasks.push(tokio::spawn(run_worker(settings(&env), Arc::new(participant), listener, shutdown.clone(), 1)));
    }

    let opened = sqsaga_runtime::open_backend(&orchestrator_settings).await.unwrap();
    let sagas: Vec<(String, serde_json::Value)> =
        inputs.into_iter().enumerate().map(|(i, input)| (format!("order-go-{i:03}"), input)).collect();
    sqsaga_order::run::start_sagas(opened.queue.as_ref(), &sagas, None, sqsaga_orchestrator::clock::now_ms())
        .await
        .unwrap();
    let ids: Vec<String> = sagas.iter().map(|(id, _)| id.clone()).collect();
    let finished =
        sqsaga_order::run::wait_terminal(opened.store.as_ref(), &ids, Duration::from_secs(120), |_| {}).await.unwrap();
    assert!(finished, "not every saga finished within 120 s");

    // The Go service's state, where the checker reads the payment service's.
    let accounts = client.query("SELECT account, balance FROM accounts", &[]).await.unwrap();
    let charges = client.query("SELECT order_id, account, amount, status FROM charges", &[]).await.unwrap();
    let merchant: i64 = client.query_one("SELECT balance FROM merchant WHERE id = 1", &[]).await.unwrap().get(0);
    let file = rusqlite::Connection::open(sqsaga_order::database_path(dir.path(), "payment")).unwrap();
    file.execute_batch("DELETE FROM accounts; DELETE FROM charges; DELETE FROM merchant;").unwrap();
    for r in &accounts {
        file.execute("INSERT INTO accounts VALUES (?1, ?2)", (r.get::<_, String>(0), r.get::<_, i64>(1))).unwrap();
    }
    for r in &charges {
        let row = (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2), r.get::<_, String>(3));
        file.execute("INSERT INTO charges VALUES (?1, ?2, ?3, ?4)", row).unwrap();
    }
    file.execute("INSERT INTO merchant (id, balance) VALUES (1, ?1)", [merchant]).unwrap();
    drop(file);

    let records = opened.store.load(&ids).await.unwrap();
    let statuses: BTreeMap<String, SagaStatus> =
        records.iter().map(|r| (r.instance.id.clone(), r.instance.status)).collect();
    let checked: Vec<(String, SagaStatus, serde_json::Value)> =
        sagas.iter().map(|(id, input)| (id.clone(), statuses[id], input.clone())).collect();
    let report = sqsaga_order::check_invariants(dir.path(), &checked, &initial).unwrap();
    assert!(report.ok, "{report}");
    assert!(report.completed > 0 && !charges.is_empty(), "the Go service charged nothing: {report}");
    assert!(report.compensated > 0, "the run exercised no compensation: {report}");

    drop(go);
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    db.drop_now().await.unwrap();
}
