//! Message signing: an optional HMAC-SHA256 over a canonical form of each
//! message, carried in the [`ATTR_SIGNATURE`](crate::ATTR_SIGNATURE) message
//! attribute as `v1,t=<ms>,k=<key id>,s=<hex>`.
//!
//! The canonical form names what the message *is* — its kind, saga id,
//! command id, step, phase and attempt, read from the JSON body — plus the
//! signing time and the sha256 of the whole body, one `name=<json string>`
//! line each (see [`canonical`]). The body hash binds every byte; the named
//! fields make a signature mean something on its own (a reply to step 2 of
//! saga X, signed at t) and keep the form stable if the envelope grows.
//!
//! Keys are shared secrets (`SQSAGA_SIGNING_KEY`); a key's id is the first
//! 8 hex digits of its sha256, so a signature says which key made it without
//! revealing it. During a rotation the previous key
//! (`SQSAGA_SIGNING_KEY_PREVIOUS`) still verifies. MACs are compared in
//! constant time ([`hmac::Mac::verify_slice`]).
//!
//! Pure: no clock (callers pass `now`), no IO, no queues.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqsaga_core::Millis;

type HmacSha256 = Hmac<Sha256>;

/// Version tag of the signature format; the first field of the attribute.
pub const SIGNATURE_VERSION: &str = "v1";

/// Why a message's signature was not accepted. Every variant is final for
/// that message: it goes to the DLQ with this text as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Unsigned while signatures are required.
    #[error("unsigned message: signatures are required (SQSAGA_REQUIRE_SIGNATURE)")]
    Missing,
    /// The attribute is not `v1,t=<ms>,k=<8 hex>,s=<64 hex>`.
    #[error("malformed signature attribute: {0}")]
    Malformed(String),
    /// Signed with a key this process does not hold (neither the current
    /// nor the previous one): a rotation gone wrong, or a forgery.
    #[error("signed with unknown key `{key_id}` (known: {known})")]
    UnknownKey {
        /// The key id the signature names.
        key_id: String,
        /// The ids this process holds, comma-separated.
        known: String,
    },
    /// The MAC does not match the message: it was altered or forged.
    #[error("forged or altered message: signature does not match (key `{key_id}`)")]
    Forged {
        /// The key id the signature names.
        key_id: String,
    },
    /// Validly signed, but longer ago than the allowed age (a replay, or a
    /// backlog older than `SQSAGA_SIGNATURE_MAX_AGE`).
    #[error("stale signature: signed {}ms ago, more than the allowed {}ms", .age.as_millis(), .max_age.as_millis())]
    Stale {
        /// How long ago it was signed.
        age: Duration,
        /// The allowed age.
        max_age: Duration,
    },
    /// Validly signed, but dated further in the future than the allowed age
    /// (a clock far off, or a forged time).
    #[error("signature dated {}ms in the future, more than the allowed {}ms", .ahead.as_millis(), .max_age.as_millis())]
    FromTheFuture {
        /// How far ahead of `now` it is dated.
        ahead: Duration,
        /// The allowed skew.
        max_age: Duration,
    },
}

impl SignatureError {
    /// Never: the same message fails the same way on every delivery.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// How a message passed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Signed with the current key.
    Current,
    /// Signed with the previous key (a rotation in progress).
    Previous,
    /// Unsigned, accepted because signatures are not required (a rollout).
    Unsigned,
}

/// One key and its public id.
#[derive(Clone)]
struct Key {
    /// First 8 hex digits of sha256(secret): names the key in signatures.
    id: String,
    secret: Vec<u8>,
}

impl Key {
    fn new(secret: &[u8]) -> Self {
        let digest = hex::encode(Sha256::digest(secret));
        Key { id: digest[..8].to_string(), secret: secret.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable_hmac(),
        }
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // `Hmac::new_from_slice` only rejects keys for MACs with fixed key sizes.
    panic!("HMAC-SHA256 rejected a key; HMAC takes keys of any length")
}

/// Signs outgoing messages with the current key and verifies incoming ones
/// against the current and the previous key.
#[derive(Clone)]
pub struct Signer {
    current: Key,
    previous: Option<Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: the secrets never reach a log line.
        f.debug_struct("Signer")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

impl PartialEq for Signer {
    fn eq(&self, other: &Self) -> bool {
        self.current.id == other.current.id
            && self.previous.as_ref().map(|k| &k.id) == other.previous.as_ref().map(|k| &k.id)
    }
}

impl Eq for Signer {}

impl Signer {
    /// A signer with `current`, also accepting `previous` during a rotation.
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Self {
        Signer { current: Key::new(current), previous: previous.map(Key::new) }
    }

    /// Id of the key that signs (first 8 hex of its sha256).
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// The attribute value signing `body` at `now`.
    pub fn sign(&self, body: &str, now: Millis) -> String {
        let mut mac = self.current.mac();
        mac.update(canonical(body, now).as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        format!("{SIGNATURE_VERSION},t={now},k={},s={signature}", self.current.id)
    }

    /// Checks `attr` (the message's signature attribute, if any) against
    /// `body`. Unsigned messages pass only when `require` is false; a signed
    /// message must always verify, and be at most `max_age` old (or ahead).
    pub fn verify(
        &self,
        body: &str,
        attr: Option<&str>,
        now: Millis,
        max_age: Duration,
        require: bool,
    ) -> Result<Verified, SignatureError> {
        let Some(attr) = attr else {
            return if require { Err(SignatureError::Missing) } else { Ok(Verified::Unsigned) };
        };
        let (signed_at, verified) = self.check_mac(body, attr)?;
        let max_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        if now > signed_at && now - signed_at > max_ms {
            return Err(SignatureError::Stale { age: Duration::from_millis(now - signed_at), max_age });
        }
        if signed_at > now && signed_at - now > max_ms {
            return Err(SignatureError::FromTheFuture { ahead: Duration::from_millis(signed_at - now), max_age });
        }
        Ok(verified)
    }

    /// Re-signs a message at `now` if its current signature is genuine,
    /// whatever its age: how an operator's redrive refreshes messages that
    /// went stale in a DLQ without laundering forged ones. `None` when the
    /// message is unsigned or does not verify.
    pub fn refresh(&self, body: &str, attr: Option<&str>, now: Millis) -> Option<String> {
        let attr = attr?;
        self.check_mac(body, attr).ok()?;
        Some(self.sign(body, now))
    }

    /// Parses `attr` and checks its MAC; returns the signing time.
    fn check_mac(&self, body: &str, attr: &str) -> Result<(Millis, Verified), SignatureError> {
        let parsed = parse_attribute(attr)?;
        let (key, verified) = if parsed.key_id == self.current.id {
            (&self.current, Verified::Current)
        } else {
            match &self.previous {
                Some(previous) if parsed.key_id == previous.id => (previous, Verified::Previous),
                _ => {
                    let mut known = vec![self.current.id.clone()];
                    known.extend(self.previous.as_ref().map(|k| k.id.clone()));
                    return Err(SignatureError::UnknownKey { key_id: parsed.key_id, known: known.join(", ") });
                }
            }
        };
        let mut mac = key.mac();
        mac.update(canonical(body, parsed.signed_at).as_bytes());
        mac.verify_slice(&parsed.mac).map_err(|_| SignatureError::Forged { key_id: parsed.key_id.clone() })?;
        Ok((parsed.signed_at, verified))
    }
}

/// A process's signature policy: its keys, how old a signature may be, and
/// whether unsigned messages are refused. What the orchestrator and worker
/// options carry (`None` there means signing is off altogether).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// The current key (signs) and the previous one (still verifies).
    pub signer: Signer,
    /// Signed messages older (or further ahead) than this are rejected.
    pub max_age: Duration,
    /// Refuse unsigned messages; when false, only signed ones are checked
    /// (the rollout phase: every sender signs before receivers require it).
    pub require: bool,
}

impl Signing {
    /// The attribute value signing `body` at `now`.
    pub fn sign(&self, body: &str, now: Millis) -> String {
        self.signer.sign(body, now)
    }

    /// Verifies a received message under this policy.
    pub fn verify(&self, body: &str, attr: Option<&str>, now: Millis) -> Result<Verified, SignatureError> {
        self.signer.verify(body, attr, now, self.max_age, self.require)
    }
}

/// The fields of a signature attribute.
struct Parsed {
    signed_at: Millis,
    key_id: String,
    mac: Vec<u8>,
}

fn parse_attribute(attr: &str) -> Result<Parsed, SignatureError> {
    let bad = |why: &str| SignatureError::Malformed(format!("{why} (expected `v1,t=<ms>,k=<key id>,s=<hex>`)"));
    let mut parts = attr.split(',');
    match parts.next() {
        Some(SIGNATURE_VERSION) => {}
        None | Some("") => return Err(bad("empty")),
        Some(other) => {
            let shown: String = other.chars().take(16).collect();
            return Err(bad(&format!("unsupported version `{shown}`")));
        }
    }
    let (mut t, mut k, mut s) = (None, None, None);
    for part in parts {
        match part.split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some(v),
            Some(("k", v)) if k.is_none() => k = Some(v),
            Some(("s", v)) if s.is_none() => s = Some(v),
            _ => return Err(bad("unexpected or repeated field")),
        }
    }
    let signed_at = t.ok_or_else(|| bad("no t="))?.parse::<u64>().map_err(|_| bad("t= is not milliseconds"))?;
    let key_id = k.ok_or_else(|| bad("no k="))?;
    if key_id.len() != 8 || !key_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("k= is not 8 hex digits"));
    }
    let mac = hex::decode(s.ok_or_else(|| bad("no s="))?).map_err(|_| bad("s= is not hex"))?;
    if mac.len() != 32 {
        return Err(bad("s= is not a 32-byte HMAC-SHA256"));
    }
    Ok(Parsed { signed_at, key_id: key_id.to_ascii_lowercase(), mac })
}

/// The text that is MACed: one `name=<JSON string>` line per field, in this
/// order: `sqsaga-signature` (the format version), `kind`, `saga_id`,
/// `command_id`, `step`, `phase`, `attempt`, `t` (signing time in ms) and
/// `body_sha256`. Fields come from the body's JSON (`type` is the kind;
/// seed-shaped messages, which have none, are `seed`, and their phase comes
/// from `is_compensating`); a field the body lacks is empty. Quoting every
/// value as a JSON string keeps a newline inside an id from forging a line.
pub fn canonical(body: &str, signed_at: Millis) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let text = |name: &str| match value.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let kind = match value.get("type") {
        Some(_) => text("type"),
        None if value.get("saga_id").is_some() => "seed".to_string(),
        None => String::new(),
    };
    let phase = match value.get("is_compensating") {
        Some(Value::Bool(true)) => "compensation".to_string(),
        Some(Value::Bool(false)) => "action".to_string(),
        _ => text("phase"),
    };
    let fields = [
        ("sqsaga-signature", SIGNATURE_VERSION.to_string()),
        ("kind", kind),
        ("saga_id", text("saga_id")),
        ("command_id", text("command_id")),
        ("step", text("step")),
        ("phase", phase),
        ("attempt", text("attempt")),
        ("t", signed_at.to_string()),
        ("body_sha256", hex::encode(Sha256::digest(body.as_bytes()))),
    ];
    let mut out = String::new();
    for (name, v) in fields {
        out.push_str(name);
        out.push('=');
        out.push_str(&Value::String(v).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-current";
    const OLD: &[u8] = b"fedcba9876543210fedcba9876543210-previous";
    const REPLY: &str = r#"{"type":"reply","command_id":"s1:2:a:1","saga_id":"s1","step":2,"phase":"action","attempt":1,"outcome":{"succeeded":{"output":null}},"worker":{"service":"x","instance":"i","fingerprint":"f"},"replied_at":5}"#;
    const NOW: Millis = 1_700_000_000_000;
    const MAX: Duration = Duration::from_secs(300);

    fn signer() -> Signer {
        Signer::new(KEY, None)
    }

    /// Verifies `attr` over `body` at `now` with signatures required.
    fn check(s: &Signer, body: &str, attr: &str, now: Millis) -> Result<Verified, SignatureError> {
        s.verify(body, Some(attr), now, MAX, true)
    }

    #[test]
    fn canonical_form_names_every_field_and_the_body_hash() {
        let text = canonical(REPLY, 42);
        let expected = format!(
            "sqsaga-signature=\"v1\"\nkind=\"reply\"\nsaga_id=\"s1\"\ncommand_id=\"s1:2:a:1\"\nstep=\"2\"\n\
             phase=\"action\"\nattempt=\"1\"\nt=\"42\"\nbody_sha256=\"{}\"\n",
            hex::encode(Sha256::digest(REPLY.as_bytes()))
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn canonical_form_of_seed_messages_and_garbage() {
        let seed = r#"{"saga_id":"o-1","step":"inventory.reserve","is_compensating":true}"#;
        let text = canonical(seed, 1);
        assert!(text.contains("kind=\"seed\"\n"), "{text}");
        assert!(text.contains("step=\"inventory.reserve\"\n"), "{text}");
        assert!(text.contains("phase=\"compensation\"\n"), "{text}");
        let garbage = canonical("not json", 1);
        assert!(garbage.contains("kind=\"\"\nsaga_id=\"\"\n"), "{garbage}");
        // A newline inside an id stays inside its quoted value.
        let sneaky = canonical(r#"{"type":"start","saga_id":"a\nkind=\"reply\""}"#, 1);
        assert_eq!(sneaky.lines().count(), 9, "{sneaky}");
    }

    #[test]
    fn signature_attribute_has_the_documented_shape() {
        let s = signer();
        let attr = s.sign(REPLY, NOW);
        let parts: Vec<&str> = attr.split(',').collect();
        assert_eq!(parts[0], "v1");
        assert_eq!(parts[1], format!("t={NOW}"));
        assert_eq!(parts[2], format!("k={}", &hex::encode(Sha256::digest(KEY))[..8]));
        assert!(parts[3].starts_with("s=") && parts[3].len() == 2 + 64, "{attr}");
        assert_eq!(s.key_id().len(), 8);
    }

    #[test]
    fn a_signed_message_verifies() {
        let s = signer();
        let attr = s.sign(REPLY, NOW);
        assert_eq!(check(&s, REPLY, &attr, NOW + 1000), Ok(Verified::Current));
    }

    #[test]
    fn a_changed_body_or_time_is_forged() {
        let s = signer();
        let attr = s.sign(REPLY, NOW);
        let altered = REPLY.replace("\"attempt\":1", "\"attempt\":2");
        assert!(matches!(check(&s, &altered, &attr, NOW), Err(SignatureError::Forged { .. })));
        let retimed = attr.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert!(matches!(check(&s, REPLY, &retimed, NOW), Err(SignatureError::Forged { .. })));
    }

    #[test]
    fn another_key_is_unknown() {
        let theirs = Signer::new(b"an attacker's key that is long enough!!", None);
        let attr = theirs.sign(REPLY, NOW);
        let err = check(&signer(), REPLY, &attr, NOW).unwrap_err();
        assert!(matches!(&err, SignatureError::UnknownKey { key_id, .. } if key_id == theirs.key_id()), "{err}");
    }

    #[test]
    fn malformed_attributes_are_named() {
        let s = signer();
        let good = s.sign(REPLY, NOW);
        let cases = [
            ("", "empty"),
            ("v2,t=1,k=abcdef01,s=00", "unsupported version"),
            ("v1,k=abcdef01,s=00", "no t="),
            ("v1,t=soon,k=abcdef01,s=00", "t= is not milliseconds"),
            ("v1,t=1,k=xyz,s=00", "k= is not 8 hex"),
            ("v1,t=1,k=abcdef01,s=zz", "s= is not hex"),
            ("v1,t=1,k=abcdef01,s=00", "32-byte"),
            ("v1,t=1,t=2,k=abcdef01,s=00", "repeated"),
        ];
        for (attr, why) in cases {
            match check(&s, REPLY, attr, NOW) {
                Err(SignatureError::Malformed(text)) => assert!(text.contains(why), "{attr}: {text}"),
                other => panic!("{attr}: {other:?}"),
            }
        }
        assert!(check(&s, REPLY, &good, NOW).is_ok());
    }

    #[test]
    fn stale_and_future_signatures_are_rejected() {
        let s = signer();
        let attr = s.sign(REPLY, NOW);
        let late = NOW + 300_001;
        assert_eq!(
            check(&s, REPLY, &attr, late),
            Err(SignatureError::Stale { age: Duration::from_millis(300_001), max_age: MAX })
        );
        assert!(check(&s, REPLY, &attr, NOW + 300_000).is_ok(), "exactly max_age is still fine");
        let early = NOW - 300_001;
        assert!(matches!(check(&s, REPLY, &attr, early), Err(SignatureError::FromTheFuture { .. })));
        assert!(check(&s, REPLY, &attr, NOW - 1000).is_ok(), "small clock skew is fine");
    }

    #[test]
    fn unsigned_messages_pass_only_when_not_required() {
        let s = signer();
        assert_eq!(s.verify(REPLY, None, NOW, MAX, true), Err(SignatureError::Missing));
        assert_eq!(s.verify(REPLY, None, NOW, MAX, false), Ok(Verified::Unsigned));
        // A signature present must verify even when not required (rollout).
        let forged = s.sign(REPLY, NOW).replace("s=", "s=ff").chars().take(200).collect::<String>();
        assert!(s.verify(REPLY, Some(&forged), NOW, MAX, false).is_err());
    }

    #[test]
    fn rotation_accepts_the_previous_key_and_signs_with_the_current_one() {
        let before = Signer::new(OLD, None);
        let during = Signer::new(KEY, Some(OLD));
        let old_attr = before.sign(REPLY, NOW);
        assert_eq!(check(&during, REPLY, &old_attr, NOW), Ok(Verified::Previous));
        let new_attr = during.sign(REPLY, NOW);
        assert_eq!(check(&during, REPLY, &new_attr, NOW), Ok(Verified::Current));
        // A process not yet rotated does not know the new key.
        assert!(matches!(check(&before, REPLY, &new_attr, NOW), Err(SignatureError::UnknownKey { .. })));
    }

    #[test]
    fn refresh_re_signs_genuine_messages_only() {
        let s = signer();
        let attr = s.sign(REPLY, NOW);
        let later = NOW + 3_600_000;
        let fresh = s.refresh(REPLY, Some(&attr), later).unwrap();
        assert_eq!(check(&s, REPLY, &fresh, later), Ok(Verified::Current));
        assert_eq!(s.refresh(REPLY, None, later), None);
        assert_eq!(s.refresh("{\"type\":\"start\"}", Some(&attr), later), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", Signer::new(KEY, Some(OLD)));
        assert!(!shown.contains("0123456789abcdef0123"), "{shown}");
        assert!(shown.contains(signer().key_id()), "{shown}");
    }
}
