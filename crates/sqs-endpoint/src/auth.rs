//! What the endpoint checks of a request's AWS Signature Version 4
//! (`Authorization: AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/sqs/aws4_request,
//! SignedHeaders=..., Signature=...`).
//!
//! With an access key id configured, every request must carry that header
//! and name that key id; anything else is refused (403) before the request
//! is read further. With a secret access key configured as well, the
//! signature itself is verified: the canonical request is rebuilt from the
//! method, path, query, the signed headers and the sha256 of the body, the
//! signing key derived from the secret, the credential scope's date and
//! region and `sqs`, and the MAC compared in constant time; the request time
//! (`X-Amz-Date`) must be within 15 minutes of now, and the body must be
//! signed (`UNSIGNED-PAYLOAD` is refused). Without a secret, the key id is
//! only an identifier: it keeps clients that were not given it out, but
//! anyone who knows it gets in.
//!
//! Pure: the caller passes `now`.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::SqsError;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm SigV4 request headers use.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Largest accepted difference between the request time and now (as AWS).
const MAX_SKEW_MS: i64 = 15 * 60 * 1000;

/// The credentials a client must present.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Compared with the key id of every request's credential scope.
    pub access_key_id: String,
    /// When set, signatures are verified with it.
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The parts of a request a signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// The fields of an `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SqsError> {
    let incomplete = |why: &str| SqsError::incomplete_signature(format!("Authorization header: {why}"));
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| incomplete(&format!("only {ALGORITHM} (Signature Version 4) is accepted")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(incomplete(&format!("unexpected part `{}`", part.trim()))),
        }
    }
    let credential = credential.ok_or_else(|| incomplete("no Credential="))?;
    let mut scope = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some("aws4_request"), None) =
        (scope.next(), scope.next(), scope.next(), scope.next(), scope.next(), scope.next())
    else {
        return Err(incomplete("Credential is not <key id>/<date>/<region>/<service>/aws4_request"));
    };
    let signed_headers: Vec<&str> = signed.ok_or_else(|| incomplete("no SignedHeaders="))?.split(';').collect();
    let signature = signature.ok_or_else(|| incomplete("no Signature="))?;
    Ok(Authorization { access_key_id, date, region, service, signed_headers, signature })
}

/// Checks `request` against `credentials` at `now_ms` (see the module doc).
pub fn check(credentials: &Credentials, request: &SignedRequest<'_>, now_ms: u64) -> Result<(), SqsError> {
    let value = request.headers.get("authorization").ok_or_else(|| {
        SqsError::missing_authentication("Request is missing an Authorization header (Signature Version 4)")
    })?;
    let value = value.to_str().map_err(|_| SqsError::incomplete_signature("Authorization header is not ASCII"))?;
    let auth = parse_authorization(value)?;
    if auth.access_key_id != credentials.access_key_id {
        return Err(SqsError::invalid_client_token_id(format!(
            "The access key id `{}` is not the one this endpoint is configured with.",
            auth.access_key_id
        )));
    }
    let Some(secret) = &credentials.secret_access_key else {
        return Ok(());
    };
    verify_signature(secret, &auth, request, now_ms)
}

fn verify_signature(
    secret: &str,
    auth: &Authorization<'_>,
    request: &SignedRequest<'_>,
    now_ms: u64,
) -> Result<(), SqsError> {
    let mismatch = |why: String| SqsError::signature_does_not_match(why);
    let header =
        |name: &str| -> Vec<&str> { request.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect() };
    let amz_date = header("x-amz-date")
        .first()
        .copied()
        .ok_or_else(|| SqsError::incomplete_signature("X-Amz-Date header is missing (the signature's time)"))?;
    if !auth.signed_headers.contains(&"host") || !auth.signed_headers.contains(&"x-amz-date") {
        return Err(SqsError::incomplete_signature("SignedHeaders must include host and x-amz-date"));
    }
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| SqsError::incomplete_signature(format!("X-Amz-Date `{amz_date}` is not YYYYMMDDTHHMMSSZ")))?;
    let skew = i64::try_from(now_ms).unwrap_or(i64::MAX).saturating_sub(signed_at.saturating_mul(1000));
    if skew.abs() > MAX_SKEW_MS {
        return Err(mismatch(format!("Signature expired: X-Amz-Date {amz_date} is more than 15 minutes from now.")));
    }
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(mismatch(format!("Credential date {} is not the date of X-Amz-Date {amz_date}", auth.date)));
    }
    let body_hash = hex::encode(Sha256::digest(request.body));
    let payload = match header("x-amz-content-sha256").first() {
        None => body_hash,
        Some(&"UNSIGNED-PAYLOAD") => {
            return Err(mismatch("UNSIGNED-PAYLOAD is refused: the body must be signed".to_string()));
        }
        Some(claimed) if claimed.eq_ignore_ascii_case(&body_hash) => body_hash,
        Some(_) => return Err(mismatch("X-Amz-Content-SHA256 is not the sha256 of the body".to_string())),
    };
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values = header(name);
        if values.is_empty() {
            return Err(mismatch(format!("signed header `{name}` is not in the request")));
        }
        let joined: Vec<String> = values.iter().map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        canonical_headers.push_str(&format!("{name}:{}\n", joined.join(",")));
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{}\n{payload}",
        request.method,
        canonical_path(request.path),
        canonical_query(request.query),
        auth.signed_headers.join(";"),
    );
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let string_to_sign =
        format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region, auth.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let claimed = hex::decode(auth.signature).map_err(|_| mismatch("Signature is not hex".to_string()))?;
    let mut mac = new_mac(&key);
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&claimed).map_err(|_| {
        mismatch(
            "The request signature does not match the one computed with the configured secret access key.".to_string(),
        )
    })
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    panic!("HMAC-SHA256 rejected a key; HMAC takes keys of any length")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = new_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
fn parse_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(num(0..4)?).ok()?, month, u8::try_from(num(6..8)?).ok()?).ok()?;
    let at = date
        .with_hms(u8::try_from(num(9..11)?).ok()?, u8::try_from(num(11..13)?).ok()?, u8::try_from(num(13..15)?).ok()?)
        .ok()?;
    Some(at.assume_utc().unix_timestamp())
}

/// SigV4's URI encoding: everything but `A-Za-z0-9-_.~` as `%XX`.
fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Services other than S3 encode each path segment twice: once in the
/// request, once here.
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    path.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k)), uri_encode(&percent_decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// The `get-vanilla` case of the AWS SigV4 test suite: a GET to `/` of
    /// `example.amazonaws.com`, service `service`, region `us-east-1`.
    #[test]
    fn the_aws_sigv4_test_suite_vanilla_case_verifies() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        );
        let request = SignedRequest { method: "GET", path: "/", query: "", headers: &headers, body: b"" };
        let now = 1_440_938_160_000; // 2015-08-30T12:36:00Z
        let creds =
            |secret: &str| Credentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: Some(secret.into()) };
        assert_eq!(check(&creds("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), &request, now), Ok(()));
        let wrong = check(&creds("another secret"), &request, now).unwrap_err();
        assert_eq!(wrong.shape, "SignatureDoesNotMatch");
        let late = check(&creds("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), &request, now + 16 * 60 * 1000);
        assert_eq!(late.unwrap_err().shape, "SignatureDoesNotMatch");
        let other_key = Credentials { access_key_id: "AKIDOTHER".into(), secret_access_key: None };
        assert_eq!(check(&other_key, &request, now).unwrap_err().shape, "InvalidClientTokenId");
        let key_only = Credentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: None };
        assert_eq!(check(&key_only, &request, now + 3_600_000), Ok(()), "without a secret only the key id counts");
    }

    #[test]
    fn a_request_without_or_with_a_malformed_header_is_refused() {
        let creds = Credentials { access_key_id: "AKID".into(), secret_access_key: None };
        let mut headers = HeaderMap::new();
        let request = |h: &HeaderMap| {
            check(&creds, &SignedRequest { method: "POST", path: "/", query: "", headers: h, body: b"" }, 0)
        };
        assert_eq!(request(&headers).unwrap_err().shape, "MissingAuthenticationToken");
        for bad in ["Basic abc", "AWS4-HMAC-SHA256 Credential=AKID/2015/x", "AWS4-HMAC-SHA256 Foo=bar"] {
            headers.insert("authorization", HeaderValue::from_static(bad));
            assert_eq!(request(&headers).unwrap_err().shape, "IncompleteSignature", "{bad}");
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a%20b+c"), "k=a%20b%20c");
        assert_eq!(canonical_path("/000000000000/q"), "/000000000000/q");
        assert_eq!(canonical_path("/a b"), "/a%20b");
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
    }
}
