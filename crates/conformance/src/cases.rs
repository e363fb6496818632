//! The protocol's cases, one function each: what to send and what the
//! participant's replies (or its DLQ) must show. Each case works on saga ids
//! of its own, so one case's failure does not leak into the next; effects
//! are observed by `conformance.read`, which goes through the barrier like
//! any action and so gets a fresh saga id per read.

use std::time::Duration;

use serde_json::{Value, json};
use sqsaga_core::machine::Outcome;
use sqsaga_protocol::{ATTR_SIGNATURE, ATTR_TRACEPARENT, Envelope, Signer, Signing, TraceParent};

use crate::contract::{APPLY, READ, UNDO};
use crate::driver::{Arrived, Cmd, Driver, now_ms, shorten};

/// What a case found: `Ok` passes; `Err` says what was wrong.
pub type Check = Result<(), String>;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(what()) }
}

fn input(key: &str, amount: i64) -> Value {
    json!({"key": key, "amount": amount})
}

fn describe(outcome: &Outcome) -> String {
    serde_json::to_string(outcome).unwrap_or_default()
}

fn succeeded(arrived: &Arrived, what: &str) -> Result<Value, String> {
    match &arrived.reply.outcome {
        Outcome::Succeeded { output } => Ok(output.clone()),
        other => Err(format!("{what}: expected succeeded, got {}", describe(other))),
    }
}

fn refused(arrived: &Arrived, what: &str, reason_contains: &str) -> Check {
    match &arrived.reply.outcome {
        Outcome::Refused { reason } if reason.contains(reason_contains) => Ok(()),
        other => {
            Err(format!("{what}: expected refused (reason containing `{reason_contains}`), got {}", describe(other)))
        }
    }
}

/// The counter of `key`, read through the participant.
async fn read(d: &mut Driver, key: &str) -> Result<i64, String> {
    let saga = d.saga(&format!("read-{}", uuid::Uuid::new_v4().simple()));
    let mut cmd = Cmd::action(&saga, READ, json!({"key": key}));
    cmd.step_name = "read".to_string();
    let arrived = d.call(&cmd).await?;
    let output = succeeded(&arrived, "conformance.read")?;
    output
        .get("value")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("conformance.read output has no integer value: {output}"))
}

/// Whether the participant answers at all: one read of a fresh key. Run
/// after a case whose wait ran out, so a participant that is down or stuck
/// costs the run one more timeout instead of one per remaining case.
pub async fn answers(d: &mut Driver) -> Check {
    let key = d.saga("alive");
    read(d, &key).await.map(drop)
}

async fn expect_counter(d: &mut Driver, key: &str, want: i64, why: &str) -> Check {
    let got = read(d, key).await?;
    ensure(got == want, || format!("counter `{key}` is {got}, expected {want} ({why})"))
}

/// The reply's shape and routing: schema-valid, on the command's `reply_to`,
/// ids copied, the effect in the output, signed when signing is on.
pub async fn reply_shape(d: &mut Driver, reply_schema: &jsonschema::Validator) -> Check {
    let key = d.saga("shape");
    let cmd = Cmd::action(&key, APPLY, input(&key, 5));
    let trace = d.send(&cmd).await?;
    let arrived = d.reply_to(&cmd.command_id()).await?;
    let body: Value = serde_json::from_str(&arrived.body).map_err(|e| format!("reply body is not JSON: {e}"))?;
    let problems: Vec<String> =
        reply_schema.iter_errors(&body).map(|e| format!("{e} at {}", e.instance_path())).collect();
    ensure(problems.is_empty(), || format!("reply against reply.schema.json: {}", problems.join("; ")))?;
    let r = &arrived.reply;
    let sent = d.command(&cmd);
    ensure(
        (r.command_id.as_str(), r.saga_id.as_str(), r.step, r.phase, r.attempt)
            == (sent.command_id.as_str(), sent.saga_id.as_str(), sent.step, sent.phase, sent.attempt),
        || format!("reply does not copy command_id/saga_id/step/phase/attempt: {}", shorten(&arrived.body)),
    )?;
    ensure(r.worker.service == d.service, || {
        format!("reply's worker.service is `{}`, not `{}`", r.worker.service, d.service)
    })?;
    let output = succeeded(&arrived, "apply")?;
    ensure(output == json!({"key": key, "value": 5}), || {
        format!("apply output {output}, expected {{\"key\":…,\"value\":5}}")
    })?;
    if let Some(signing) = &d.signing {
        let attr = arrived.attributes.get(ATTR_SIGNATURE).map(String::as_str);
        signing.verify(&arrived.body, attr, now_ms()).map_err(|e| format!("reply signature: {e}"))?;
    }
    trace_propagated(&arrived, &trace)
}

/// The reply carries the command's trace id in its `traceparent`.
fn trace_propagated(arrived: &Arrived, sent: &TraceParent) -> Check {
    let Some(value) = arrived.attributes.get(ATTR_TRACEPARENT) else {
        return Err("reply has no traceparent attribute".into());
    };
    let got = TraceParent::parse(value).map_err(|e| format!("reply traceparent `{value}`: {e}"))?;
    ensure(got.trace_id() == sent.trace_id(), || {
        format!("reply trace id {} is not the command's {}", got.trace_id(), sent.trace_id())
    })
}

/// Trace context alone: a fresh command, its reply's `traceparent`.
pub async fn trace_context(d: &mut Driver) -> Check {
    let key = d.saga("trace");
    let cmd = Cmd::action(&key, APPLY, input(&key, 1));
    let trace = d.send(&cmd).await?;
    let arrived = d.reply_to(&cmd.command_id()).await?;
    succeeded(&arrived, "apply")?;
    trace_propagated(&arrived, &trace)
}

/// The same command twice, and a later attempt of the same step: one effect,
/// the same answer each time.
pub async fn duplicate(d: &mut Driver) -> Check {
    let key = d.saga("dup");
    let cmd = Cmd::action(&key, APPLY, input(&key, 7));
    let first = succeeded(&d.call(&cmd).await?, "first delivery")?;
    let again = succeeded(&d.call(&cmd).await?, "second delivery")?;
    ensure(again == first, || format!("second delivery answered {again}, the first {first}"))?;
    let retry = succeeded(&d.call(&cmd.clone().attempt(2)).await?, "attempt 2 of the same step")?;
    ensure(retry == first, || format!("attempt 2 answered {retry}, attempt 1 {first}"))?;
    expect_counter(d, &key, 7, "the action ran more than once").await
}

/// An action, then its compensation (twice): the effect is undone once.
pub async fn compensation(d: &mut Driver) -> Check {
    let key = d.saga("comp");
    succeeded(&d.call(&Cmd::action(&key, APPLY, input(&key, 4))).await?, "apply")?;
    let undo = Cmd::compensation(&key, UNDO, input(&key, 4));
    let first = succeeded(&d.call(&undo).await?, "undo")?;
    ensure(first == json!({"key": key, "value": 0}), || format!("undo output {first}, expected value 0"))?;
    let again = succeeded(&d.call(&undo).await?, "undo again")?;
    ensure(again == first, || format!("a duplicate undo answered {again}, the first {first}"))?;
    expect_counter(d, &key, 0, "the compensation ran more or less than once").await
}

/// A compensation for an action never seen: succeeded, output `null`, no effect.
pub async fn null_compensation(d: &mut Driver) -> Check {
    let key = d.saga("null");
    let output = succeeded(&d.call(&Cmd::compensation(&key, UNDO, input(&key, 3))).await?, "undo before apply")?;
    ensure(output.is_null(), || format!("a compensation before its action must answer null, got {output}"))?;
    expect_counter(d, &key, 0, "a compensation ran without its action").await
}

/// The action arriving after its compensation: refused, never run.
pub async fn late_action(d: &mut Driver) -> Check {
    let key = d.saga("late");
    succeeded(&d.call(&Cmd::compensation(&key, UNDO, input(&key, 3))).await?, "undo before apply")?;
    let late = d.call(&Cmd::action(&key, APPLY, input(&key, 3))).await?;
    refused(&late, "apply after its compensation", "compensated before the action ran")?;
    expect_counter(d, &key, 0, "the late action ran").await
}

/// The fence: before the action it prevents it; after, it reports the action's output.
pub async fn fence(d: &mut Driver) -> Check {
    let fence = sqsaga_core::machine::FENCE_COMMAND;
    let key = d.saga("fence-first");
    let output = succeeded(&d.call(&Cmd::compensation(&key, fence, input(&key, 2))).await?, "fence")?;
    ensure(output == json!({"fence": "prevented"}), || format!("fence before the action answered {output}"))?;
    let late = d.call(&Cmd::action(&key, APPLY, input(&key, 2))).await?;
    refused(&late, "apply after a fence", "compensated before the action ran")?;
    expect_counter(d, &key, 0, "the fenced action ran").await?;

    let key = d.saga("fence-after");
    let done = succeeded(&d.call(&Cmd::action(&key, APPLY, input(&key, 2))).await?, "apply")?;
    let output = succeeded(&d.call(&Cmd::compensation(&key, fence, input(&key, 2))).await?, "fence after apply")?;
    let want = json!({"fence": "already_ran", "output": done});
    ensure(output == want, || format!("fence after the action answered {output}, expected {want}"))?;
    expect_counter(d, &key, 2, "a fence must not undo").await
}

/// A business refusal: no effect, the same answer again, and its compensation a no-op.
pub async fn refusal(d: &mut Driver) -> Check {
    let key = d.saga("refuse");
    let cmd = Cmd::action(&key, APPLY, json!({"key": key, "amount": 6, "refuse": "conformance says no"}));
    refused(&d.call(&cmd).await?, "apply with refuse", "conformance says no")?;
    refused(&d.call(&cmd.clone().attempt(2)).await?, "a retry of a refused step", "conformance says no")?;
    let undo = succeeded(&d.call(&Cmd::compensation(&key, UNDO, input(&key, 6))).await?, "undo of a refused apply")?;
    ensure(undo.is_null(), || format!("undo of a refused action must answer null, got {undo}"))?;
    expect_counter(d, &key, 0, "a refused action or its compensation had an effect").await
}

/// A transient failure: replied as such, nothing recorded, and the next attempt runs.
pub async fn retries(d: &mut Driver) -> Check {
    let key = d.saga("retry");
    let cmd = Cmd::action(&key, APPLY, json!({"key": key, "amount": 9, "transient_below_attempt": 2}));
    let first = d.call(&cmd).await?;
    ensure(matches!(first.reply.outcome, Outcome::Transient { .. }), || {
        format!("attempt 1 must fail transiently, got {}", describe(&first.reply.outcome))
    })?;
    expect_counter(d, &key, 0, "a transient failure kept its writes").await?;
    succeeded(&d.call(&cmd.clone().attempt(2)).await?, "attempt 2")?;
    expect_counter(d, &key, 9, "attempt 2 must run once").await
}

/// An action received after its `not_after`: refused unrun, for good.
pub async fn expired(d: &mut Driver) -> Check {
    let key = d.saga("expired");
    let mut cmd = Cmd::action(&key, APPLY, input(&key, 1));
    cmd.not_after_ms = Some(-60_000);
    refused(&d.call(&cmd).await?, "apply past not_after", "expired in queue")?;
    expect_counter(d, &key, 0, "an expired action ran").await
}

fn reason_present(what: &str, reason: Option<String>) -> Check {
    match reason {
        Some(r) if !r.trim().is_empty() => Ok(()),
        _ => Err(format!("{what} reached the DLQ without an `sqsaga-dlq-reason` attribute")),
    }
}

/// A body that is not JSON goes to the DLQ with a reason.
pub async fn poison_unparseable(d: &mut Driver) -> Check {
    let marker = d.saga("poison-json");
    let signing = d.signing.clone();
    let body = format!("{{ this is not JSON {marker}");
    d.send_raw(body, None, signing.as_deref().map(|s| (s, now_ms()))).await.map_err(|e| e.to_string())?;
    reason_present("an unparseable body", d.dead_letter(&marker).await?.reason)
}

/// A command the contract does not have goes to the DLQ with a reason.
pub async fn poison_unknown_command(d: &mut Driver) -> Check {
    let key = d.saga("poison-cmd");
    let cmd = Cmd::action(&key, "conformance.no_such_command", input(&key, 1));
    d.send(&cmd).await?;
    reason_present("an unknown command", d.dead_letter(&key).await?.reason)
}

/// A body of an unknown protocol version goes to the DLQ with a reason.
pub async fn poison_unknown_version(d: &mut Driver) -> Check {
    let key = d.saga("poison-version");
    let mut body: Value = serde_json::to_value(Envelope::Command(d.command(&Cmd::action(&key, APPLY, input(&key, 1)))))
        .map_err(|e| e.to_string())?;
    body["protocol"] = json!(2);
    let signing = d.signing.clone();
    d.send_raw(body.to_string(), None, signing.as_deref().map(|s| (s, now_ms()))).await.map_err(|e| e.to_string())?;
    reason_present("a protocol 2 command", d.dead_letter(&key).await?.reason)?;
    expect_counter(d, &key, 0, "a protocol 2 command ran").await
}

/// After the poison, the participant still answers.
pub async fn keeps_running(d: &mut Driver) -> Check {
    let key = d.saga("alive");
    succeeded(&d.call(&Cmd::action(&key, APPLY, input(&key, 1))).await?, "apply after poison messages")?;
    Ok(())
}

/// How a signature case spoils the command's signature.
#[derive(Debug, Clone, Copy)]
pub enum Spoil {
    /// Signed with a key the deployment does not have.
    Forged,
    /// Signed with the right key, longer ago than the max age.
    Stale,
    /// Not signed at all.
    Missing,
}

/// A command whose signature does not pass goes to the DLQ, unrun.
pub async fn bad_signature(d: &mut Driver, spoil: Spoil) -> Check {
    let Some(signing) = d.signing.clone() else {
        return Err("signing is not configured".into());
    };
    let key = d.saga(&format!("sig-{spoil:?}").to_lowercase());
    let body = Envelope::Command(d.command(&Cmd::action(&key, APPLY, input(&key, 1)))).encode();
    let forged = Signing {
        signer: Signer::new(b"conformance-kit-forged-key-0123456789", None),
        max_age: signing.max_age,
        require: true,
    };
    let stale_at =
        now_ms().saturating_sub(signing.max_age.as_millis() as u64 + Duration::from_secs(120).as_millis() as u64);
    let how = match spoil {
        Spoil::Forged => Some((&forged, now_ms())),
        Spoil::Stale => Some((signing.as_ref(), stale_at)),
        Spoil::Missing => None,
    };
    d.send_raw(body, None, how).await.map_err(|e| e.to_string())?;
    reason_present("a command with a bad signature", d.dead_letter(&key).await?.reason)?;
    expect_counter(d, &key, 0, "a command with a bad signature ran").await
}
