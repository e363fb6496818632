//! Every envelope decoder of `crates/protocol` on arbitrary bodies: what the
//! orchestrator decodes ([`Envelope::decode`]), what a worker decodes
//! ([`decode_worker_message`], sqsaga commands and the seed's shape), and
//! the canonical form a signature covers ([`signing::canonical`]).
//!
//! Properties: no panic; an error names its cause; what decodes re-encodes
//! to a body that decodes to the same value (the orchestrator and workers
//! forward what they decoded); a worker sees exactly the commands the
//! orchestrator's decoder sees, and refuses every other kind by name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqsaga_protocol::{DecodeError, Envelope, PROTOCOL_FIELD, WorkerMessage, decode_worker_message, signing};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let as_envelope = Envelope::decode(body);
    match &as_envelope {
        Ok(envelope) => {
            let encoded = envelope.encode();
            assert!(!encoded.is_empty(), "{envelope:?} encodes to nothing");
            assert_eq!(Envelope::decode(&encoded).as_ref(), Ok(envelope), "decode(encode(x)) != x for {encoded}");
            let value: serde_json::Value = serde_json::from_str(&encoded).expect("encode writes JSON");
            assert!(value.get(PROTOCOL_FIELD).is_none(), "v1 senders leave `protocol` out: {encoded}");
        }
        Err(e) => named(e),
    }

    match decode_worker_message(body) {
        Ok(WorkerMessage::Command(command)) => {
            assert_eq!(as_envelope, Ok(Envelope::Command(command)), "worker and orchestrator disagree on {body}");
        }
        Ok(WorkerMessage::Seed(seed)) => {
            let encoded = serde_json::to_string(&seed).expect("a seed message serialises");
            match decode_worker_message(&encoded) {
                Ok(WorkerMessage::Seed(again)) => assert_eq!(again, seed, "seed round trip through {encoded}"),
                other => panic!("seed message {encoded} decodes as {other:?}"),
            }
        }
        Err(e) => {
            named(&e);
            if let Ok(envelope) = &as_envelope {
                match envelope {
                    Envelope::Command(_) => panic!("a command the orchestrator decodes is refused by workers: {e}"),
                    other => assert_eq!(
                        e,
                        DecodeError::WrongKind { found: other.kind().to_string(), expected: "command" },
                        "{body}"
                    ),
                }
            }
        }
    }

    let canonical = signing::canonical(body, 1);
    assert_eq!(canonical.lines().count(), 9, "one line per field, whatever the body holds: {canonical:?}");
});

/// An error says what was wrong.
fn named(e: &DecodeError) {
    let text = e.to_string();
    assert!(text.len() > 20, "error without a cause: {text:?}");
}
