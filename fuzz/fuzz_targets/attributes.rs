//! The message attributes of `crates/protocol`: the `sqsaga-signature`
//! attribute (sign, verify, refresh, key rotation, age) and the
//! `traceparent` attribute.
//!
//! Properties: no panic on any attribute; `verify(sign(x))` accepts with
//! the signing key (current or previous) and refuses an altered body, an
//! unknown key, and a signature older or further ahead than the allowed
//! age, each with its own error; `refresh` re-signs only genuine messages;
//! a parsed `traceparent` prints as a value that parses to the same.
//!
//! Input, one field a line, the body last (it may span lines):
//! `traceparent`, signature attribute, key, other key,
//! `<signed at ms> <now ms> <max age ms> <require: 0|1>`, body.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sqsaga_protocol::{SignatureError, Signer, TraceParent, Verified};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut fields = text.splitn(6, '\n');
    let mut next = || fields.next().unwrap_or("");
    let (traceparent, attribute, key, other_key, numbers, body) = (next(), next(), next(), next(), next(), next());
    let (key, other_key) = (key.as_bytes(), other_key.as_bytes());
    let mut numbers = numbers.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
    let mut number = || numbers.next().unwrap_or(0);
    let (signed_at, now, max_age_ms, require) = (number(), number(), number(), number() == 1);
    let max_age = Duration::from_millis(max_age_ms);
    let signer = Signer::new(key, None);
    let rotated = Signer::new(other_key, Some(key));
    let same_key = other_key == key;

    // Whatever the attribute says: no panic, a named refusal.
    for s in [&signer, &rotated] {
        match s.verify(body, Some(attribute), now, max_age, require) {
            Ok(verified) => {
                assert_ne!(verified, Verified::Unsigned);
                assert!(s.refresh(body, Some(attribute), now).is_some(), "verified but not refreshable");
            }
            Err(e) => assert!(e.to_string().len() > 20, "refusal without a cause: {e:?}"),
        }
    }

    // verify(sign(x)) at the signing time.
    let signed = signer.sign(body, signed_at);
    assert_eq!(signer.verify(body, Some(&signed), signed_at, max_age, require), Ok(Verified::Current));
    let expected = if same_key { Verified::Current } else { Verified::Previous };
    assert_eq!(rotated.verify(body, Some(&signed), signed_at, max_age, true), Ok(expected));
    // Unsigned: only when not required.
    let unsigned = signer.verify(body, None, now, max_age, require);
    assert_eq!(unsigned, if require { Err(SignatureError::Missing) } else { Ok(Verified::Unsigned) });
    // An altered body is a forgery.
    let altered = format!("{body} ");
    assert!(matches!(
        signer.verify(&altered, Some(&signed), signed_at, max_age, require),
        Err(SignatureError::Forged { .. })
    ));
    // A key this process does not hold.
    if !same_key {
        let stranger = Signer::new(other_key, None);
        assert!(matches!(
            stranger.verify(body, Some(&signed), signed_at, max_age, require),
            Err(SignatureError::UnknownKey { .. })
        ));
    }
    // Age: exactly max_age is accepted, one millisecond more is not, either way.
    let max_ms = max_age_ms;
    if let Some(late) = signed_at.checked_add(max_ms) {
        assert_eq!(signer.verify(body, Some(&signed), late, max_age, require), Ok(Verified::Current));
        if let Some(later) = late.checked_add(1) {
            assert!(matches!(
                signer.verify(body, Some(&signed), later, max_age, require),
                Err(SignatureError::Stale { .. })
            ));
        }
    }
    if let Some(early) = signed_at.checked_sub(max_ms) {
        assert_eq!(signer.verify(body, Some(&signed), early, max_age, require), Ok(Verified::Current));
        if let Some(earlier) = early.checked_sub(1) {
            assert!(matches!(
                signer.verify(body, Some(&signed), earlier, max_age, require),
                Err(SignatureError::FromTheFuture { .. })
            ));
        }
    }
    // Refresh: a genuine signature is re-signed at `now`, whatever its age.
    assert_eq!(signer.refresh(body, Some(&signed), now), Some(signer.sign(body, now)));
    assert_eq!(signer.refresh(&altered, Some(&signed), now), None);

    // traceparent: parse(print(parse(x))) == parse(x).
    match TraceParent::parse(traceparent) {
        Ok(parsed) => {
            let printed = parsed.to_string();
            assert_eq!(TraceParent::parse(&printed), Ok(parsed), "{traceparent:?} printed as {printed}");
            let child = parsed.child(body);
            assert_eq!(child.trace_id(), parsed.trace_id());
            assert_eq!(TraceParent::parse(&child.to_string()), Ok(child));
        }
        Err(e) => assert!(!e.why.is_empty() && e.value.chars().count() <= 64, "{e:?}"),
    }
});
