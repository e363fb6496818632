//! What a sender outside the orchestrator and the workers (the operator
//! commands, the demo, the benchmarks) puts on messages besides their body:
//! fresh W3C trace contexts for the sagas it starts, and [`seal`], which
//! stamps a trace and a signature (policy from `settings::signing`).

use sqsaga_protocol::{ATTR_SIGNATURE, ATTR_TRACEPARENT, Signing, TraceParent};
use sqsaga_queue::OutgoingMessage;

/// A new trace with a random trace id, for a saga the CLI starts.
pub fn new_trace() -> TraceParent {
    loop {
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        // All zeros is invalid in W3C and astronomically unlikely: draw again.
        if let Some(tp) = TraceParent::from_random(bytes) {
            return tp;
        }
    }
}

/// `body` as a message, with `trace` as its `traceparent` and, when a
/// policy is given, signed now.
pub fn seal(body: String, signing: Option<&Signing>, trace: Option<TraceParent>) -> OutgoingMessage {
    let mut out = OutgoingMessage::new(body);
    if let Some(tp) = trace {
        out = out.with_attribute(ATTR_TRACEPARENT, tp.to_string());
    }
    if let Some(signing) = signing {
        let signature = signing.sign(&out.body, sqsaga_orchestrator::clock::now_ms());
        out = out.with_attribute(ATTR_SIGNATURE, signature);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqsaga_protocol::Signer;

    use super::*;

    #[test]
    fn sealed_messages_carry_a_valid_trace_and_a_verifying_signature() {
        let policy = Signing {
            signer: Signer::new(b"0123456789abcdef0123456789abcdef-key", None),
            max_age: Duration::from_secs(60),
            require: true,
        };
        let trace = new_trace();
        assert_ne!(trace.trace_id(), new_trace().trace_id(), "fresh traces differ");
        let m = seal("{\"type\":\"resume\",\"saga_id\":\"s\",\"requested_at\":1}".into(), Some(&policy), Some(trace));
        assert_eq!(m.attributes.get(ATTR_TRACEPARENT), Some(&trace.to_string()));
        let attr = m.attributes.get(ATTR_SIGNATURE).map(String::as_str);
        assert!(policy.verify(&m.body, attr, sqsaga_orchestrator::clock::now_ms()).is_ok());
        let bare = seal("{}".into(), None, None);
        assert!(bare.attributes.is_empty());
    }
}
