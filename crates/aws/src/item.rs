//! The pure half of [`DynamoStore`](crate::DynamoStore): how a saga is laid
//! out in its item, which attributes a commit writes, which index partition
//! an item lands in, and what a write costs. No IO, no clock: `now` is an
//! argument, so every rule here is tested by table.
//!
//! ## Why the item looks like this (issue 12, measured on the order saga)
//!
//! DynamoDB bills a write per started KB of the whole item, plus one write
//! per index whose key or projected attributes the write changes (two when
//! a key changes: the old index entry is deleted, the new one put). The
//! first layout — state JSON, a growing history list and the outbox as plain
//! attributes, three indexes keyed on `updated_at`, `next_due_at` and
//! `outbox_at` — cost 12.2 write units per step: items of 1.5–4.7 KB and
//! three index keys changed by nearly every write, plus a separate write to
//! clear each outbox. Now:
//!
//! - **One compressed body.** State, recent history and pending outboxes
//!   are one raw-deflate JSON blob (`body`): the command payloads repeat the
//!   saga input and outputs the state holds, so compressing them together
//!   gains most. History keeps the first and the last [`HISTORY_KEPT`] − 1
//!   lines.
//! - **Index attributes written only when they change.** `saga`, `version`,
//!   `started_at` are written by the create only; `status` when it changes.
//! - **A wake-up index that does not churn.** `wake_at` is a lower bound of
//!   when the saga needs looking at (its next timer, or a pending outbox's
//!   age past [`OUTBOX_GRACE_MS`]): a commit rewrites it only when the new
//!   time is earlier, or the stored one has passed. A saga that finishes
//!   before its first timer (the normal case) enters the index once and
//!   leaves it once. One that outlives it is read when it fires early and
//!   its `wake_at` moved forward then.
//! - **No outbox-clear write.** `clear_outbox` marks the outbox sent in the
//!   adapter's cache; the saga's next commit writes the body without it. An
//!   outbox still unconfirmed when its grace passes is cleared by the timer
//!   pass that reads it.
//! - **Terminal sagas in their own index**, written once at the end
//!   (`end_pk`, `ended_at`), with the TTL attribute (`expires_at`).
//! - **Sharded index partitions**: `due#<k>` and `<status>#<k>`, `k` a
//!   stable hash of the saga id mod [`INDEX_SHARDS`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use sqsaga_core::Millis;
use sqsaga_core::machine::{SagaInstance, SagaStatus};
use sqsaga_store::HistoryEntry;

/// Partitions per index: `due#0`..`due#15`, `completed#0`.. and so on. At
/// 10,000 steps/s the busiest index partition takes well under DynamoDB's
/// 1,000 writes/s per partition (see [`index_writes_per_second`]); queries
/// fan out over the shards.
pub const INDEX_SHARDS: u32 = 16;

/// How long an outbox may stay unconfirmed before a timer pass (or the
/// sweeper) looks at it: the orchestrator's default sweep interval, so
/// the sweeper's "older than one interval" outboxes are all in range.
pub const OUTBOX_GRACE_MS: Millis = 10_000;

/// History lines kept in the item: the first (the start) and the latest
/// ones; the lines in between are counted, not kept.
pub const HISTORY_KEPT: usize = 32;

/// `wake_at` of a saga that waits for no timer (`needs_operator`): in the
/// index, so non-terminal sagas are all listed from it, never due.
pub const NEVER: Millis = 9_999_999_999_999;

/// The TTL attribute: epoch seconds after which DynamoDB deletes a terminal saga.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Default retention of terminal sagas (the `retention` setting).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Write units of one item write of at most 1 KB.
pub const WRU_PER_KB: f64 = 1.0;

/// What the order saga's writes cost, per saga on the happy path (every
/// step's action succeeds before its first timer): the arithmetic behind
/// `docs/scaling.md`. The table writes are one per transition; the index
/// writes are per saga, not per step.
pub mod cost {
    /// Table writes per saga besides one per step: the create.
    pub const TABLE_WRITES_PER_SAGA: u32 = 1;
    /// Table writes per step: the commit of its reply (≤ 1 KB: one unit).
    pub const TABLE_WRITES_PER_STEP: u32 = 1;
    /// `by_due` writes per saga: put at the create, deleted by the terminal commit.
    pub const DUE_INDEX_WRITES_PER_SAGA: u32 = 2;
    /// `by_end` writes per saga: put once by the terminal commit.
    pub const END_INDEX_WRITES_PER_SAGA: u32 = 1;
    /// Extra `by_due` writes of a compensation: the projected `status` changes.
    pub const DUE_INDEX_WRITES_PER_COMPENSATION: u32 = 1;
    /// A step that outlives its saga's `wake_at` (a step slower than
    /// [`super::OUTBOX_GRACE_MS`] or a timer that fires): one table write
    /// and an index key move (delete and put).
    pub const WRITES_PER_LATE_WAKE: u32 = 3;
    /// Read units per step: the consistent read of the saga before its
    /// commit (an item ≤ 4 KB is one unit).
    pub const READS_PER_STEP: f64 = 1.0;
}

/// Write units per step of a saga of `steps` steps on the happy path, all
/// items ≤ 1 KB: `(1 + steps) table writes + 3 index writes` per saga.
pub fn wru_per_step(steps: f64) -> f64 {
    let per_saga =
        f64::from(cost::TABLE_WRITES_PER_SAGA + cost::DUE_INDEX_WRITES_PER_SAGA + cost::END_INDEX_WRITES_PER_SAGA);
    f64::from(cost::TABLE_WRITES_PER_STEP) + per_saga / steps.max(1.0)
}

/// Writes per second on the busiest partition of (`by_due`, `by_end`) at
/// `steps_per_second` with sagas of `steps` steps, load spread by the id hash.
pub fn index_writes_per_second(steps_per_second: f64, steps: f64) -> (f64, f64) {
    let sagas = steps_per_second / steps.max(1.0);
    let shards = f64::from(INDEX_SHARDS);
    (
        sagas * f64::from(cost::DUE_INDEX_WRITES_PER_SAGA) / shards,
        sagas * f64::from(cost::END_INDEX_WRITES_PER_SAGA) / shards,
    )
}

/// The shard of a saga id: FNV-1a, stable across processes and builds.
pub fn shard_of(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % INDEX_SHARDS
}

/// `due#<shard>`: the `by_due` partition of a non-terminal saga.
pub fn due_pk(id: &str) -> String {
    due_partition(shard_of(id))
}

pub fn due_partition(shard: u32) -> String {
    format!("due#{shard}")
}

/// `<status>#<shard>`: the `by_end` partition of a terminal saga.
pub fn end_pk(status: SagaStatus, id: &str) -> String {
    end_partition(status, shard_of(id))
}

pub fn end_partition(status: SagaStatus, shard: u32) -> String {
    format!("{}#{shard}", status.as_str())
}

/// An outbox message as stored in the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub queue: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Duration::is_zero")]
    pub delay: Duration,
}

/// One revision's outbox, pending until confirmed sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutbox {
    pub rev: u64,
    pub at: Millis,
    pub msgs: Vec<StoredMessage>,
}

/// What `body` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub state: SagaInstance,
    /// The first line and the latest ones (see [`HISTORY_KEPT`]).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Lines dropped between the first and the kept ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub elided: u64,
    /// Outboxes committed and not yet confirmed sent, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<StoredOutbox>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// First byte of `body`: raw deflate of the JSON [`Body`].
const BODY_DEFLATE_JSON: u8 = 1;

impl Body {
    /// Appends history lines, keeping the first and the latest ones.
    pub fn append_history(&mut self, lines: Vec<HistoryEntry>) {
        self.history.extend(lines);
        if self.history.len() > HISTORY_KEPT {
            let drop = self.history.len() - HISTORY_KEPT;
            self.history.drain(1..1 + drop);
            self.elided += drop as u64;
        }
    }

    /// The history as the port returns it: with a line saying how many
    /// were not kept, where they were.
    pub fn full_history(&self) -> Vec<HistoryEntry> {
        let mut out = self.history.clone();
        if self.elided > 0 && !out.is_empty() {
            let at = out.get(1).map_or(out[0].at, |h| h.at);
            out.insert(
                1,
                HistoryEntry {
                    at,
                    event: "elided".to_string(),
                    note: format!("{} earlier lines not kept (the item keeps {HISTORY_KEPT})", self.elided),
                },
            );
        }
        out
    }

    /// When the saga must next be looked at: its timer (non-terminal; a
    /// saga waiting for no timer is [`NEVER`] due) or its oldest pending
    /// outbox's grace, whichever is first. `None`: not at all (terminal,
    /// nothing pending): the saga leaves `by_due`.
    pub fn required_wake(&self) -> Option<Millis> {
        let outbox = self.outbox.iter().map(|o| o.at.saturating_add(OUTBOX_GRACE_MS)).min();
        let timer =
            if self.state.status.is_terminal() { None } else { Some(self.state.next_wakeup().unwrap_or(NEVER)) };
        match (timer, outbox) {
            (Some(t), Some(o)) => Some(t.min(o)),
            (t, o) => t.or(o),
        }
    }

    /// The compressed attribute value.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let json = serde_json::to_vec(self).map_err(|e| format!("cannot serialise: {e}"))?;
        let mut out = vec![BODY_DEFLATE_JSON];
        let mut enc = flate2::write::DeflateEncoder::new(&mut out, flate2::Compression::best());
        enc.write_all(&json).map_err(|e| format!("cannot compress: {e}"))?;
        enc.finish().map_err(|e| format!("cannot compress: {e}"))?;
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Body, String> {
        let Some((&format, rest)) = bytes.split_first() else {
            return Err("`body` is empty".to_string());
        };
        if format != BODY_DEFLATE_JSON {
            return Err(format!("`body` has unknown format {format}"));
        }
        let mut json = Vec::new();
        flate2::read::DeflateDecoder::new(rest)
            .read_to_end(&mut json)
            .map_err(|e| format!("`body` cannot be decompressed: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| format!("`body` is not a saga: {e}"))
    }
}

/// What a write does to `wake_at` (the `by_due` index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakePlan {
    /// Leave it: no index write.
    Keep,
    /// Write this value (enters the index, or moves in it).
    Set(Millis),
    /// Remove it: the saga leaves the index.
    Remove,
}

/// The rule that keeps `by_due` from churning: `stored` is the item's
/// `wake_at`, `required` what the new body needs. A stored time still in
/// the future and not later than needed is kept (the saga may be looked at
/// early, never late); one already passed moves, so a fired timer does not
/// fire again.
pub fn plan_wake(stored: Option<Millis>, required: Option<Millis>, now: Millis) -> WakePlan {
    match (stored, required) {
        (None, None) => WakePlan::Keep,
        (Some(_), None) => WakePlan::Remove,
        (None, Some(r)) => WakePlan::Set(r),
        (Some(s), Some(r)) if s == r || (s > now && s <= r) => WakePlan::Keep,
        (Some(_), Some(r)) => WakePlan::Set(r),
    }
}

/// What a commit writes besides `revision` and `body`: the pure decision,
/// from what the item held (`None` for a create) and the new body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPlan {
    pub wake: WakePlan,
    /// `status` changed (or the item is new): write it.
    pub status: Option<SagaStatus>,
    /// The saga just became terminal: `end_pk`, `ended_at`, `expires_at`.
    pub ended: Option<Ended>,
}

/// The terminal attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub end_pk: String,
    pub ended_at: Millis,
    /// Epoch seconds.
    pub expires_at: u64,
}

/// What the item held before a write, as far as the plan cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Before {
    pub status: SagaStatus,
    pub wake_at: Option<Millis>,
}

pub fn plan_commit(before: Option<Before>, body: &Body, retention: Duration, now: Millis) -> CommitPlan {
    let status = body.state.status;
    let wake = plan_wake(before.and_then(|b| b.wake_at), body.required_wake(), now);
    let was_terminal = before.is_some_and(|b| b.status.is_terminal());
    let ended = (status.is_terminal() && !was_terminal).then(|| Ended {
        end_pk: end_pk(status, &body.state.id),
        ended_at: body.state.updated_at,
        expires_at: (body.state.updated_at / 1000).saturating_add(retention.as_secs()),
    });
    CommitPlan { wake, status: (before.map(|b| b.status) != Some(status)).then_some(status), ended }
}

/// DynamoDB's size of an item: attribute names plus values (strings and
/// binaries by length, numbers about one byte per two digits plus one,
/// lists and maps 3 bytes plus their elements and, for maps, keys).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum::<usize>(),
        AttributeValue::Ss(l) => l.iter().map(String::len).sum(),
        AttributeValue::Ns(l) => l.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(l) => l.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

/// Write units of an item write of `bytes`.
pub fn write_units(bytes: usize) -> u64 {
    (bytes.max(1) as u64).div_ceil(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqsaga_core::definition::{RetryPolicy, SagaDefinition, StepDefinition};
    use sqsaga_core::machine::start;

    const NOW: Millis = 1_750_000_000_000;

    #[test]
    fn plan_wake_by_table() {
        use WakePlan::*;
        // (stored, required, now) -> plan
        let cases: &[(Option<Millis>, Option<Millis>, Millis, WakePlan)] = &[
            (None, None, 100, Keep),                 // terminal, was not in the index
            (None, Some(500), 100, Set(500)),        // create: enters the index
            (Some(500), None, 100, Remove),          // finished: leaves it
            (Some(500), Some(500), 100, Keep),       // unchanged
            (Some(500), Some(800), 100, Keep),       // later timer: the stored one only fires early
            (Some(500), Some(300), 100, Set(300)),   // earlier: must move, or fire late
            (Some(50), Some(800), 100, Set(800)),    // stored one passed: move on
            (Some(100), Some(800), 100, Set(800)),   // passing now: move on
            (Some(NEVER), Some(800), 100, Set(800)), // resumed from needs_operator
        ];
        for (stored, required, now, want) in cases {
            assert_eq!(
                plan_wake(*stored, *required, *now),
                *want,
                "stored {stored:?}, required {required:?}, now {now}"
            );
        }
    }

    fn definition() -> SagaDefinition {
        let step = |name: &str, service: &str| StepDefinition {
            name: name.to_string(),
            service: service.to_string(),
            action: format!("{service}.{name}"),
            compensation: Some(format!("{service}.undo_{name}")),
            timeout: Duration::from_secs(30),
            queue_timeout: None,
            retry: RetryPolicy::default(),
            compensation_retry: RetryPolicy::default(),
            contract: format!("{service}/v1"),
        };
        SagaDefinition {
            name: "create_order".to_string(),
            version: 1,
            description: None,
            input_schema: None,
            deadline: Duration::from_secs(300),
            steps: vec![
                step("reserve_stock", "inventory"),
                step("charge_payment", "payment"),
                step("send_confirmation", "notification"),
            ],
        }
    }

    fn body() -> Body {
        let input = json!({"order_id": "order-batched-00042", "customer": "customer-17", "sku": "sku-3", "quantity": 2, "amount_cents": 4598});
        let mut state = start(&definition(), "order-batched-00042", input, NOW).state;
        state.trace = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string());
        Body { state, history: Vec::new(), elided: 0, outbox: Vec::new() }
    }

    #[test]
    fn plan_commit_writes_index_attributes_only_when_they_change() {
        let b = body();
        let due = b.state.next_wakeup().unwrap();
        let create = plan_commit(None, &b, DEFAULT_RETENTION, NOW);
        assert_eq!(create, CommitPlan { wake: WakePlan::Set(due), status: Some(SagaStatus::Running), ended: None });
        // A step later, the timer moved on by 300 ms: nothing index-related to write.
        let mut next = b.clone();
        next.state.steps[0].due_at = Some(due + 300);
        next.state.updated_at = NOW + 300;
        let before = Before { status: SagaStatus::Running, wake_at: Some(due) };
        assert_eq!(
            plan_commit(Some(before), &next, DEFAULT_RETENTION, NOW + 300),
            CommitPlan { wake: WakePlan::Keep, status: None, ended: None }
        );
        // The end: leaves by_due, enters by_end, expires after the retention.
        let mut done = next.clone();
        done.state.status = SagaStatus::Completed;
        let plan = plan_commit(Some(before), &done, DEFAULT_RETENTION, NOW + 900);
        assert_eq!(plan.wake, WakePlan::Remove);
        assert_eq!(plan.status, Some(SagaStatus::Completed));
        let ended = plan.ended.unwrap();
        assert_eq!(ended.end_pk, format!("completed#{}", shard_of("order-batched-00042")));
        assert_eq!(ended.expires_at, (NOW + 300) / 1000 + 30 * 24 * 3600);
        // A pending outbox keeps a finished saga in by_due until it is confirmed.
        done.outbox.push(StoredOutbox { rev: 4, at: NOW + 900, msgs: Vec::new() });
        let plan = plan_commit(Some(before), &done, DEFAULT_RETENTION, NOW + 900);
        assert_eq!(plan.wake, WakePlan::Set(NOW + 900 + OUTBOX_GRACE_MS), "{plan:?}");
    }

    #[test]
    fn history_keeps_the_first_and_latest_lines() {
        let mut b = body();
        let line = |i: u64| HistoryEntry { at: i, event: "reply".into(), note: format!("line {i}") };
        b.append_history((0..40).map(line).collect());
        assert_eq!(b.history.len(), HISTORY_KEPT);
        assert_eq!(b.elided, 40 - HISTORY_KEPT as u64);
        let full = b.full_history();
        assert_eq!(full[0].note, "line 0");
        assert_eq!(full[1].event, "elided");
        assert_eq!(full.last().unwrap().note, "line 39");
        assert_eq!(full.len(), HISTORY_KEPT + 1);
    }

    #[test]
    fn body_round_trips() {
        let mut b = body();
        b.append_history(vec![HistoryEntry { at: NOW, event: "start".into(), note: "started".into() }]);
        b.outbox.push(StoredOutbox {
            rev: 1,
            at: NOW,
            msgs: vec![StoredMessage {
                queue: "inventory".into(),
                body: "{}".into(),
                attributes: Default::default(),
                delay: Duration::ZERO,
            }],
        });
        let bytes = b.encode().unwrap();
        assert_eq!(Body::decode(&bytes).unwrap(), b);
        assert!(Body::decode(&[9, 1, 2]).unwrap_err().contains("unknown format 9"));
    }

    /// The order saga's item mid-flight — state, four history lines and a
    /// command like the orchestrator's (payload, signature, traceparent) —
    /// fits in one write unit.
    #[test]
    fn an_order_saga_item_with_its_outbox_fits_one_write_unit() {
        let mut b = body();
        for (i, note) in
            ["started; dispatching reserve_stock", "step reserve_stock succeeded; dispatching charge_payment"]
                .iter()
                .enumerate()
        {
            b.append_history(vec![HistoryEntry { at: NOW + i as u64, event: "reply".into(), note: note.to_string() }]);
        }
        b.state.steps[0].output =
            Some(json!({"reservation_id": "rsv-order-batched-00042", "sku": "sku-3", "quantity": 2}));
        b.state.steps[0].worker = Some(sqsaga_core::machine::WorkerStamp {
            instance: "inventory-7f9c-1".into(),
            fingerprint: "9f2c4a1be07d33aa19c0f5e8b2d6c7a4e1f0b3d5c6a7e8f9a0b1c2d3e4f5a6b7".into(),
        });
        let command = json!({"type": "command", "command_id": "order-batched-00042:1:a:1", "saga_id": "order-batched-00042",
            "saga": "create_order", "version": 1, "step": 1, "step_name": "charge_payment", "command": "payment.charge_payment",
            "phase": "action", "attempt": 1, "contract": "payment/v1",
            "payload": {"input": b.state.input, "outputs": {"reserve_stock": b.state.steps[0].output}},
            "deadline": NOW + 300_000, "not_after": NOW + 300_000, "sent_at": NOW + 1, "reply_to": "orchestrator", "conforming": []});
        let mut attributes = std::collections::BTreeMap::new();
        attributes
            .insert("traceparent".to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-a1b2c3d4e5f60718-01".to_string());
        attributes.insert(
            "sqsaga-signature".to_string(),
            "v1;k1;1750000000001;3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string(),
        );
        b.outbox.push(StoredOutbox {
            rev: 2,
            at: NOW + 1,
            msgs: vec![StoredMessage {
                queue: "payment".into(),
                body: command.to_string(),
                attributes,
                delay: Duration::ZERO,
            }],
        });
        let raw = serde_json::to_vec(&b).unwrap().len();
        let encoded = b.encode().unwrap();
        let mut item = HashMap::from([
            ("id".to_string(), AttributeValue::S(b.state.id.clone())),
            ("revision".to_string(), AttributeValue::N("2".into())),
            ("body".to_string(), AttributeValue::B(encoded.clone().into())),
            ("status".to_string(), AttributeValue::S("running".into())),
            ("saga".to_string(), AttributeValue::S("create_order".into())),
            ("version".to_string(), AttributeValue::N("1".into())),
            ("started_at".to_string(), AttributeValue::N(NOW.to_string())),
            ("due_pk".to_string(), AttributeValue::S(due_pk(&b.state.id))),
            ("wake_at".to_string(), AttributeValue::N((NOW + 10_000).to_string())),
        ]);
        let size = item_size(&item);
        eprintln!("order saga body: {raw} bytes of JSON, {} compressed; item {size} bytes", encoded.len());
        assert!(size <= 1024, "the item is {size} bytes ({raw} bytes of JSON, {} compressed)", encoded.len());
        item.remove("body");
        assert!(item_size(&item) < 200);
    }

    #[test]
    fn shards_spread_ids_evenly_and_stay_put() {
        assert_eq!(shard_of("order-batched-00042"), shard_of("order-batched-00042"));
        let mut counts = vec![0u32; INDEX_SHARDS as usize];
        for i in 0..16_000 {
            counts[shard_of(&format!("order-{i:05}")) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 800 && *max < 1200, "uneven shards: {counts:?}");
    }

    #[test]
    fn at_ten_thousand_steps_per_second_no_index_partition_takes_a_thousand_writes() {
        let (due, end) = index_writes_per_second(10_000.0, 3.0);
        assert!(due < 1000.0 && end < 1000.0, "by_due {due}/s, by_end {end}/s per partition");
        assert!((wru_per_step(3.0) - 2.333).abs() < 0.01, "{}", wru_per_step(3.0));
    }
}
