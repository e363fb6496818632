//! What the binary puts on messages besides their body: the signing policy
//! built from the resolved settings (for the orchestrator, the workers and
//! the operator commands alike), fresh W3C trace contexts for the sagas the
//! CLI starts, and [`seal`], which stamps both on an outgoing message.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use sqsaga_config::Settings;
use sqsaga_protocol::{ATTR_SIGNATURE, ATTR_TRACEPARENT, Signer, Signing, TraceParent};
use sqsaga_queue::OutgoingMessage;

use crate::serve::{ConfigArgs, resolve};

/// The signing policy of `settings`; `None` when no key is configured
/// (the configuration check refuses `require_signature` without a key).
pub fn signing(settings: &Settings) -> Option<Arc<Signing>> {
    let key = settings.signing_key.as_ref()?;
    let previous = settings.signing_key_previous.as_ref();
    Some(Arc::new(Signing {
        signer: Signer::new(key.expose().as_bytes(), previous.map(|p| p.expose().as_bytes())),
        max_age: settings.signature_max_age,
        require: settings.require_signature,
    }))
}

/// The signing policy for a one-shot command (`start`, `sagas resume`,
/// `demo load`, `dlq redrive`) working on `data_dir`: the same environment
/// and config file as the processes, every problem printed.
pub fn signing_for(data_dir: &Path) -> Result<Option<Arc<Signing>>> {
    let args = ConfigArgs { config: None, data_dir: Some(data_dir.to_path_buf()) };
    match resolve(&args, None) {
        Ok(settings) => Ok(signing(&settings)),
        Err(_) => bail!("invalid configuration (problems listed above); the message was not sent"),
    }
}

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
