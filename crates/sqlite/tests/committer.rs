//! The group committer on a real file: jobs with and without savepoints,
//! and what a failing job costs the others in its transaction.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::time::Duration;

use sqsaga_sqlite::{GroupCommitter, Linger, SqliteError, Sync};

fn committer(dir: &tempfile::TempDir) -> GroupCommitter {
    let conn = sqsaga_sqlite::open(&dir.path().join("t.db"), Sync::Normal).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER NOT NULL)").unwrap();
    GroupCommitter::start("test", conn, Linger::NONE).unwrap()
}

async fn rows(c: &GroupCommitter) -> Vec<i64> {
    c.run(|tx| -> Result<Vec<i64>, rusqlite::Error> {
        let mut stmt = tx.prepare("SELECT x FROM t ORDER BY x")?;
        let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
        Ok(rows)
    })
    .await
    .unwrap()
    .unwrap()
}

fn insert(x: i64) -> impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), String> + Send + 'static {
    move |tx| tx.execute("INSERT INTO t (x) VALUES (?1)", [x]).map(|_| ()).map_err(|e| e.to_string())
}

/// Holds the file's write lock from a second connection for a moment, so
/// the jobs sent meanwhile queue up and run in one transaction once the
/// writer gets the lock.
async fn with_writer_held<T>(dir: &tempfile::TempDir, sent: impl std::future::Future<Output = T>) -> T {
    let other = sqsaga_sqlite::open(&dir.path().join("t.db"), Sync::Normal).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    let out = sent.await;
    release.join().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_job_that_fails_before_writing_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let c = committer(&dir);
    let (a, b, d) = with_writer_held(&dir, async {
        tokio::join!(
            c.run_in_batch(insert(1)),
            c.run_in_batch(|_tx| -> Result<(), String> { Err("refused before writing".into()) }),
            c.run_in_batch(insert(3)),
        )
    })
    .await;
    assert_eq!(a.unwrap(), Ok(()));
    assert_eq!(b.unwrap(), Err("refused before writing".to_string()));
    assert_eq!(d.unwrap(), Ok(()));
    assert_eq!(rows(&c).await, vec![1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_job_that_fails_after_writing_rolls_back_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let c = committer(&dir);
    let (a, b, d) = with_writer_held(&dir, async {
        tokio::join!(
            c.run_in_batch(insert(1)),
            c.run_in_batch(|tx| -> Result<(), String> {
                tx.execute("INSERT INTO t (x) VALUES (2)", []).map_err(|e| e.to_string())?;
                Err("failed after writing".into())
            }),
            c.run_in_batch(insert(3)),
        )
    })
    .await;
    assert!(matches!(a, Err(SqliteError::Aborted(_))), "{a:?}");
    assert_eq!(b.unwrap(), Err("failed after writing".to_string()));
    // A job that had not run yet is not part of the rolled-back
    // transaction: it starts the next one.
    assert_eq!(d.unwrap(), Ok(()));
    assert!(SqliteError::Aborted(String::new()).is_retryable());
    assert_eq!(rows(&c).await, vec![3]);
    // The writer goes on.
    c.run_in_batch(insert(4)).await.unwrap().unwrap();
    assert_eq!(rows(&c).await, vec![3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_savepoint_job_that_fails_after_writing_rolls_back_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let c = committer(&dir);
    let (a, b) = with_writer_held(&dir, async {
        tokio::join!(
            c.run_in_batch(insert(1)),
            c.run(|tx| -> Result<(), String> {
                tx.execute("INSERT INTO t (x) VALUES (2)", []).map_err(|e| e.to_string())?;
                Err("failed after writing".into())
            }),
        )
    })
    .await;
    assert_eq!(a.unwrap(), Ok(()));
    assert_eq!(b.unwrap(), Err("failed after writing".to_string()));
    assert_eq!(rows(&c).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_writer_runs_jobs_as_they_arrive_and_commits_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let conn = sqsaga_sqlite::open(&dir.path().join("t.db"), Sync::Normal).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER NOT NULL)").unwrap();
    let linger = Linger {
        max: Duration::from_millis(400),
        gap: Duration::from_millis(400),
        busy_within: Duration::from_secs(5),
        min_jobs: 1,
    };
    let c = GroupCommitter::start("test", conn, linger).unwrap();
    // The first job after a quiet spell commits at once.
    c.run_in_batch(insert(1)).await.unwrap().unwrap();
    assert_eq!(c.commits(), 1);
    // Now busy: the first job runs at once and the transaction stays open
    // for the second, which arrives later and joins the same commit.
    let ran_first = std::sync::Arc::new(std::sync::Mutex::new(None));
    let ran = ran_first.clone();
    let first = c.run_in_batch(move |tx| {
        *ran.lock().unwrap() = Some(std::time::Instant::now());
        tx.execute("INSERT INTO t (x) VALUES (2)", []).map(|_| ()).map_err(|e| e.to_string())
    });
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent_at = std::time::Instant::now();
        (sent_at, c.run_in_batch(insert(3)).await)
    };
    let (a, (sent_at, b)) = tokio::join!(first, second);
    a.unwrap().unwrap();
    b.unwrap().unwrap();
    let ran_at = ran_first.lock().unwrap().expect("the first job ran");
    assert!(ran_at < sent_at, "the first job ran before the second was sent");
    assert_eq!(c.commits(), 2, "both jobs shared one commit");
    assert_eq!(rows(&c).await, vec![1, 2, 3]);
}
