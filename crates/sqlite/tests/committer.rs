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

/// Holds the writer for a moment, so the jobs sent meanwhile form the next batch.
async fn with_writer_held<T>(c: &GroupCommitter, sent: impl std::future::Future<Output = T>) -> T {
    let hold = c.run(|_tx| -> Result<(), String> {
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    });
    let (held, out) = tokio::join!(hold, async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        sent.await
    });
    held.unwrap().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_job_that_fails_before_writing_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let c = committer(&dir);
    let (a, b, d) = with_writer_held(&c, async {
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
async fn a_batch_job_that_fails_after_writing_rolls_back_its_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let c = committer(&dir);
    let (a, b, d) = with_writer_held(&c, async {
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
    assert!(matches!(d, Err(SqliteError::Aborted(_))), "{d:?}");
    assert!(SqliteError::Aborted(String::new()).is_retryable());
    assert_eq!(rows(&c).await, Vec::<i64>::new());
    // The writer goes on.
    c.run_in_batch(insert(4)).await.unwrap().unwrap();
    assert_eq!(rows(&c).await, vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_savepoint_job_that_fails_after_writing_rolls_back_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let c = committer(&dir);
    let (a, b) = with_writer_held(&c, async {
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
