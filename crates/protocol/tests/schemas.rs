//! The protocol's specification against this code: every ```` ```json ````
//! example in `docs/protocol.md` is valid against its schema in
//! `schema/protocol/` and decodes with the Rust decoder; every envelope this
//! crate encodes is valid; schema and decoder agree on which fields are
//! required and that unknown ones are refused; the signature test vector in
//! the document is what the signer computes.
//!
//! What the running services send is validated in
//! `examples/order/tests/protocol_schemas.rs`.
#![allow(clippy::unwrap_used, reason = "tests: a failure is the test failing")]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_protocol::{
    CancelSaga, Command, DecodeError, Envelope, Heartbeat, ReplyMessage, ResumeSaga, SeedMessage, Signer, StartSaga,
    WorkerInfo, WorkerMessage, decode_worker_message, signing,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The compiled schema `schema/protocol/<name>.schema.json`.
fn schema(name: &str) -> jsonschema::Validator {
    let path = root().join(format!("schema/protocol/{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::validator_for(&value).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The schema a body belongs to: its `type`, or `seed` without one.
fn schema_name(body: &Value) -> String {
    body.get("type").and_then(Value::as_str).unwrap_or("seed").to_string()
}

/// Problems of `body` against its schema, one line each (empty: valid).
fn problems(body: &Value) -> Vec<String> {
    let name = schema_name(body);
    schema(&name).iter_errors(body).map(|e| format!("{name}: {} at {}", e, e.instance_path())).collect()
}

/// Whether the Rust decoder accepts `text` as what its shape says it is.
fn decodes(text: &str) -> Result<(), DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if value.get("type").is_some() {
        Envelope::decode(text).map(|_| ())
    } else {
        match decode_worker_message(text)? {
            WorkerMessage::Seed(_) => Ok(()),
            WorkerMessage::Command(_) => Err(DecodeError::BadEnvelope("seed decoded as a command".into())),
        }
    }
}

/// The bodies of the fenced blocks of `lang` in docs/protocol.md.
fn doc_blocks(lang: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_end() == format!("```{lang}") => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "docs/protocol.md: unterminated ```{lang} block");
    blocks
}

fn doc_examples() -> Vec<String> {
    let examples: Vec<String> = doc_blocks("json").into_iter().map(|b| b.trim_end().to_string()).collect();
    assert!(examples.len() >= 10, "expected the documented examples, found {}", examples.len());
    examples
}

#[test]
fn every_documented_example_is_valid_and_decodes() {
    let mut kinds = std::collections::BTreeSet::new();
    for text in doc_examples() {
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        kinds.insert(schema_name(&value));
        assert_eq!(problems(&value), Vec::<String>::new(), "{text}");
        decodes(&text).unwrap_or_else(|e| panic!("the Rust decoder refuses a documented example ({e}): {text}"));
    }
    let all = ["cancel", "command", "heartbeat", "reply", "resume", "seed", "start"];
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), all, "one example of each message at least");
}

#[test]
fn schema_and_decoder_agree_on_required_and_unknown_fields() {
    for text in doc_examples() {
        let value: Value = serde_json::from_str(&text).unwrap();
        let Value::Object(fields) = &value else { panic!("not an object: {text}") };
        for name in fields.keys().filter(|k| *k != "type") {
            let mut without = value.clone();
            without.as_object_mut().unwrap().remove(name);
            let body = without.to_string();
            assert_eq!(
                problems(&without).is_empty(),
                decodes(&body).is_ok(),
                "schema and decoder disagree on whether `{name}` is required: {body}"
            );
        }
        let mut extra = value.clone();
        extra.as_object_mut().unwrap().insert("surprise".into(), json!(1));
        assert!(!problems(&extra).is_empty(), "schema accepts an unknown field: {extra}");
        assert!(decodes(&extra.to_string()).is_err(), "decoder accepts an unknown field: {extra}");
        for version in [json!(2), json!("1"), Value::Null] {
            let mut other = value.clone();
            other.as_object_mut().unwrap().insert("protocol".into(), version.clone());
            assert!(!problems(&other).is_empty(), "schema accepts protocol {version}");
            assert!(matches!(decodes(&other.to_string()), Err(DecodeError::UnsupportedVersion(_))), "{other}");
        }
    }
}

/// One of each envelope as this crate encodes it, optional fields set and not.
fn encoded_envelopes() -> Vec<String> {
    let command = Command {
        command_id: "s1:0:a:1".into(),
        saga_id: "s1".into(),
        saga: "create_order".into(),
        version: 1,
        step: 0,
        step_name: "reserve_stock".into(),
        command: "inventory.reserve".into(),
        phase: Phase::Action,
        attempt: 1,
        contract: "inventory/v1".into(),
        payload: json!({"input": {"sku": "A"}, "outputs": {}}),
        deadline: 10,
        not_after: Some(5),
        sent_at: 1,
        reply_to: "orchestrator".into(),
        conforming: Some(vec!["abc".into()]),
    };
    let bare = Command { not_after: None, conforming: None, phase: Phase::Compensation, ..command.clone() };
    let worker = WorkerInfo { service: "inventory".into(), instance: "i-1".into(), fingerprint: "f".into() };
    let reply = |outcome| ReplyMessage {
        command_id: "s1:0:a:1".into(),
        saga_id: "s1".into(),
        step: 0,
        phase: Phase::Action,
        attempt: 1,
        outcome,
        worker: worker.clone(),
        replied_at: 2,
    };
    let start = StartSaga {
        saga_id: "s1".into(),
        saga: "create_order".into(),
        version: None,
        input: json!({}),
        requested_at: 0,
    };
    vec![
        Envelope::Command(command).encode(),
        Envelope::Command(bare).encode(),
        Envelope::Reply(reply(Outcome::Succeeded { output: json!({"id": 1}) })).encode(),
        Envelope::Reply(reply(Outcome::Refused { reason: "no".into() })).encode(),
        Envelope::Reply(reply(Outcome::Transient { error: "later".into() })).encode(),
        Envelope::Start(start.clone()).encode(),
        Envelope::Start(StartSaga { version: Some(2), ..start }).encode(),
        Envelope::Resume(ResumeSaga { saga_id: "s1".into(), requested_at: 3 }).encode(),
        Envelope::Cancel(CancelSaga { saga_id: "s1".into(), requested_by: "admin".into(), requested_at: 4 }).encode(),
        Envelope::Heartbeat(Heartbeat {
            service: "inventory".into(),
            instance: "i-1".into(),
            host: "h".into(),
            fingerprint: "f".into(),
            parts: json!({"binary": "x"}),
            in_flight: 0,
            started_at: 1,
            sent_at: 2,
            quarantined: true,
        })
        .encode(),
        serde_json::to_string(&SeedMessage {
            saga_id: "o-1".into(),
            step: "inventory.reserve".into(),
            payload: json!({}),
            is_compensating: true,
        })
        .unwrap(),
    ]
}

#[test]
fn every_encoded_envelope_is_valid() {
    for text in encoded_envelopes() {
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problems(&value), Vec::<String>::new(), "{text}");
        assert!(value.get("protocol").is_none(), "v1 senders leave `protocol` out: {text}");
    }
}

#[test]
fn the_documented_signature_test_vector_is_what_the_signer_computes() {
    const KEY: &[u8] = b"example-key-do-not-use";
    const T: u64 = 1_767_225_600_600;
    let body = doc_examples()
        .into_iter()
        .find(|b| serde_json::from_str::<Value>(b).is_ok_and(|v| v["type"] == "reply"))
        .expect("a reply example");
    let texts = doc_blocks("text");
    let signer = Signer::new(KEY, None);
    assert_eq!(signer.key_id(), "239d610c");
    let canonical = signing::canonical(&body, T);
    assert!(texts.contains(&canonical), "docs/protocol.md does not show the canonical form:\n{canonical}");
    let attribute = signer.sign(&body, T);
    assert!(texts.contains(&format!("{attribute}\n")), "docs/protocol.md does not show the attribute {attribute}");
    assert!(schema("attributes").is_valid(&json!({ "sqsaga-signature": attribute })));
}

#[test]
fn the_attribute_schema_accepts_what_is_sent_and_refuses_malformed_values() {
    let attributes = schema("attributes");
    let trace = sqsaga_protocol::TraceParent::derived("s1");
    let ok = json!({
        "traceparent": trace.child("cmd").to_string(),
        "sqsaga-signature": Signer::new(b"k", None).sign("{}", 1),
        "sqsaga-dlq-reason": "unknown command `x`",
        "sqsaga-dlq-source": "inventory",
        "other": "carried along",
    });
    assert!(attributes.is_valid(&ok), "{ok}");
    for bad in [
        json!({"traceparent": "00-xyz"}),
        json!({"sqsaga-signature": "v2,t=1,k=abcdef01,s=00"}),
        json!({"sqsaga-dlq-reason": "x".repeat(1025)}),
        json!({"other": 1}),
    ] {
        assert!(!attributes.is_valid(&bad), "{bad}");
    }
}
