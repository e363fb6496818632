//! W3C trace context on the wire: the `traceparent` message attribute
//! (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) that follows a
//! saga from its start request through every command and reply, so every
//! log line and exported span of one saga shares one trace id.
//!
//! Span ids of the messages the orchestrator and the workers send are
//! derived ([`TraceParent::child`]): the same command re-sent carries the
//! same traceparent. Fresh trace ids come from the caller (the CLI draws
//! random ones), so this module stays pure.
//!
//! The one piece of global state is the span linker: the binary, when it
//! exports traces (OpenTelemetry), installs a function that makes a tracing
//! span part of a remote trace. Libraries call [`link_span`] on their
//! processing spans and never depend on an exporter.

use std::fmt;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` value was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent `{value}`: {why} (expected `00-<32 hex>-<16 hex>-<2 hex>`)")]
pub struct TraceParentError {
    /// The value, cut to 64 characters.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// `traceparent` flag: the trace is sampled (recorded).
pub const FLAG_SAMPLED: u8 = 0x01;

impl TraceParent {
    /// A traceparent from raw ids; `None` if either is all zeros (invalid in W3C).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> Option<Self> {
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id, flags: FLAG_SAMPLED })
    }

    /// A new trace from 24 random bytes (16 for the trace id, 8 for the span
    /// id); `None` only in the astronomically unlikely all-zero case.
    pub fn from_random(bytes: [u8; 24]) -> Option<Self> {
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        trace_id.copy_from_slice(&bytes[..16]);
        span_id.copy_from_slice(&bytes[16..]);
        TraceParent::new(trace_id, span_id)
    }

    /// A trace derived from `seed` (a saga id): for a start request that came
    /// without a traceparent, so the saga still gets one stable trace id.
    pub fn derived(seed: &str) -> Self {
        let digest = Sha256::digest(format!("sqsaga-trace:{seed}").as_bytes());
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        trace_id.copy_from_slice(&digest[..16]);
        span_id.copy_from_slice(&digest[16..24]);
        // A digest with 16 or 8 zero bytes does not happen; keep W3C validity anyway.
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        TraceParent { trace_id, span_id, flags: FLAG_SAMPLED }
    }

    /// Parses a `traceparent` header value. Version `00` must be exactly
    /// four fields; later versions may append fields, which are ignored.
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let fail = |why| TraceParentError { value: value.chars().take(64).collect(), why };
        let value = value.trim();
        let mut parts = value.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("fewer than four fields"));
        };
        if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
            return Err(fail("bad version"));
        }
        if version == "00" && parts.next().is_some() {
            return Err(fail("version 00 has exactly four fields"));
        }
        let trace_id: [u8; 16] = decode_fixed(trace).ok_or_else(|| fail("trace id is not 32 lowercase hex digits"))?;
        let span_id: [u8; 8] = decode_fixed(span).ok_or_else(|| fail("span id is not 16 lowercase hex digits"))?;
        let flags: [u8; 1] = decode_fixed(flags).ok_or_else(|| fail("flags are not 2 hex digits"))?;
        if trace_id == [0; 16] {
            return Err(fail("trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(fail("span id is all zeros"));
        }
        Ok(TraceParent { trace_id, span_id, flags: flags[0] })
    }

    /// The trace id as 32 lowercase hex digits (what log lines carry as `trace_id`).
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }

    /// The raw trace id.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The raw span id.
    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The same trace with a span id derived from `key` (a command id): what
    /// a message sent on behalf of this trace carries.
    pub fn child(&self, key: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(self.trace_id);
        hasher.update(key.as_bytes());
        let digest = hasher.finalize();
        let mut span_id = [0; 8];
        span_id.copy_from_slice(&digest[..8]);
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        TraceParent { trace_id: self.trace_id, span_id, flags: self.flags }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id(), self.span_id(), self.flags)
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn decode_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !is_lower_hex(s) {
        return None;
    }
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

/// Makes `span` part of the remote trace `parent` (installed by the binary
/// when it exports traces).
pub type SpanLinker = fn(&tracing::Span, &TraceParent);

static LINKER: OnceLock<SpanLinker> = OnceLock::new();

/// Installs the process's span linker; the first call wins. Returns whether
/// this call installed it.
pub fn install_span_linker(linker: SpanLinker) -> bool {
    LINKER.set(linker).is_ok()
}

/// Links `span` to `parent`'s trace if a linker is installed; a no-op otherwise.
pub fn link_span(span: &tracing::Span, parent: &TraceParent) {
    if let Some(linker) = LINKER.get() {
        linker(span, parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips_the_w3c_example() {
        let tp = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id(), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), SAMPLE);
    }

    #[test]
    fn rejects_what_w3c_rejects() {
        let cases = [
            ("", "fewer than four fields"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "fewer than four fields"),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "bad version"),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "trace id"),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "all zeros"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "all zeros"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx", "exactly four"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902-01", "span id"),
        ];
        for (value, why) in cases {
            let err = TraceParent::parse(value).unwrap_err();
            assert!(err.to_string().contains(why), "{value}: {err}");
        }
        // A later version may carry more fields.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_ok());
    }

    #[test]
    fn children_keep_the_trace_and_get_stable_distinct_span_ids() {
        let tp = TraceParent::parse(SAMPLE).unwrap();
        let a = tp.child("s1:0:a:1");
        let b = tp.child("s1:1:a:1");
        assert_eq!(a.trace_id(), tp.trace_id());
        assert_eq!(a, tp.child("s1:0:a:1"), "deterministic");
        assert_ne!(a.span_id(), b.span_id());
        assert_ne!(a.span_id(), tp.span_id());
    }

    #[test]
    fn derived_and_random_traces_are_valid() {
        let d = TraceParent::derived("order-1");
        assert_eq!(d, TraceParent::derived("order-1"));
        assert_ne!(d.trace_id(), TraceParent::derived("order-2").trace_id());
        assert_eq!(TraceParent::parse(&d.to_string()), Ok(d));
        assert_eq!(TraceParent::from_random([0; 24]), None);
        let r = TraceParent::from_random([7; 24]).unwrap();
        assert_eq!(TraceParent::parse(&r.to_string()), Ok(r));
    }

    #[test]
    fn link_span_without_a_linker_is_a_no_op() {
        let tp = TraceParent::parse(SAMPLE).unwrap();
        link_span(&tracing::Span::none(), &tp);
    }
}
