//! The SQS endpoint's Signature Version 4 checks (`crates/sqs-endpoint/src/auth.rs`):
//! the `Authorization` header parser, the `X-Amz-Date` parser and the
//! signature verification, on arbitrary requests.
//!
//! Input, HTTP-like: `<method> <path>[?<query>] <now, unix seconds>`, then
//! `name: value` header lines, an empty line, the body.
//!
//! Properties: no panic; a refusal is a 4xx naming its cause; with only an
//! access key id configured, only requests naming it pass; the same request
//! signed as the SigV4 specification says (the signer below, written from
//! the specification, not from the verifier) verifies with the secret, and
//! fails once its body, its time or the secret differ.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use sqsaga_sqs_endpoint::auth::{Credentials, SignedRequest, check};

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// Headers the signer sets itself.
const OWN: &[&str] = &["authorization", "host", "x-amz-date", "x-amz-content-sha256"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("");
    let (path, query) = request_line.next().unwrap_or("").split_once('?').map_or(("/", ""), |(p, q)| (p, q));
    let now_s: u32 = request_line.next().and_then(|n| n.parse().ok()).unwrap_or(1_440_938_160);
    let now_ms = u64::from(now_s) * 1000;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.trim()), HeaderValue::try_from(value.trim_start())) {
            headers.append(n, v);
        }
    }
    let body = body.as_bytes();

    let request = SignedRequest { method, path, query, headers: &headers, body };
    let key_only = Credentials { access_key_id: KEY_ID.to_string(), secret_access_key: None };
    let with_secret = Credentials { secret_access_key: Some(SECRET.to_string()), ..key_only.clone() };
    for credentials in [&key_only, &with_secret] {
        if let Err(e) = check(credentials, &request, now_ms) {
            assert!(e.status.is_client_error() && e.message.len() > 10, "{e:?}");
        }
    }
    if check(&key_only, &request, now_ms).is_ok() {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(auth.contains(&format!("Credential={KEY_ID}/")), "passed without naming the key id: {auth}");
    }

    // The same request signed by the specification.
    let unreserved = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
    if method.is_empty()
        || !method.chars().all(|c| c.is_ascii_uppercase())
        || !path.starts_with('/')
        || !path.chars().all(|c| unreserved(c) || c == '/')
        || !query.chars().all(|c| unreserved(c) || c == '=' || c == '&')
        || query.split('&').any(|pair| pair.matches('=').count() > 1)
    {
        return;
    }
    let signed = sign(method, path, query, &headers, body, now_s);
    let request = SignedRequest { method, path, query, headers: &signed, body };
    assert_eq!(check(&with_secret, &request, now_ms), Ok(()), "a request signed as specified is refused: {signed:?}");
    let altered = [body, b" "].concat();
    assert!(check(&with_secret, &SignedRequest { body: &altered, ..request }, now_ms).is_err(), "altered body");
    let other = Credentials { secret_access_key: Some(format!("{SECRET}x")), ..key_only.clone() };
    assert!(check(&other, &request, now_ms).is_err(), "another secret passes");
    let late = now_ms + 15 * 60 * 1000 + 1000;
    assert!(check(&with_secret, &request, late).is_err(), "a signature older than 15 minutes passes");
});

fn mac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// SigV4 as docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
/// specifies it, for `path` and `query` of unreserved characters (their own
/// URI encoding; a second `=` in a pair would need encoding): the request's other headers (those with visible-ASCII
/// values without tabs; values trimmed, runs of spaces made one), `host`,
/// `x-amz-date` and the body's sha256 are signed.
fn sign(method: &str, path: &str, query: &str, given: &HeaderMap, body: &[u8], now_s: u32) -> HeaderMap {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::from(now_s)).expect("u32 seconds are a time");
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let date = &amz_date[..8];
    let payload = hex::encode(Sha256::digest(body));
    let mut headers = HeaderMap::new();
    for (name, value) in given {
        if !OWN.contains(&name.as_str()) && value.to_str().is_ok_and(|v| !v.contains('\t')) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in
        [("host", "127.0.0.1:9324"), ("x-amz-date", amz_date.as_str()), ("x-amz-content-sha256", &payload)]
    {
        headers.insert(name, HeaderValue::from_str(value).expect("a valid header value"));
    }
    let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim_matches(' ').split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let mut pairs: Vec<(&str, &str)> =
        query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
    pairs.sort_unstable();
    let canonical_query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let signed_names = names.join(";");
    let canonical_request =
        format!("{method}\n{path}\n{}\n{canonical_headers}\n{signed_names}\n{payload}", canonical_query.join("&"));
    let scope = format!("{date}/us-east-1/sqs/aws4_request");
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request)));
    let mut key = mac(format!("AWS4{SECRET}").as_bytes(), date);
    for part in ["us-east-1", "sqs", "aws4_request"] {
        key = mac(&key, part);
    }
    let signature = hex::encode(mac(&key, &string_to_sign));
    let authorization =
        format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders={signed_names}, Signature={signature}");
    headers.insert("authorization", HeaderValue::from_str(&authorization).expect("a valid header value"));
    headers
}
