//! Opening one fresh file from many connections at once, as the
//! orchestrator, a worker and the conformance kit do when they start
//! together on one data dir: every open succeeds (the switch to WAL, which
//! SQLite may refuse at once with "database is locked" while another
//! connection switches, is retried within the busy timeout).

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::sync::{Arc, Barrier};

use sqsaga_sqlite::Sync;

#[test]
fn many_connections_opening_one_fresh_file_at_once_all_succeed() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("fresh.db"));
        let start = Arc::new(Barrier::new(6));
        let opened: Vec<_> = (0..6)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    sqsaga_sqlite::open(&path, Sync::Normal).map(drop)
                })
            })
            .collect();
        for t in opened {
            if let Err(e) = t.join().unwrap() {
                panic!("round {round}: {e}");
            }
        }
        let conn = sqsaga_sqlite::open(&path, Sync::Normal).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }
}
