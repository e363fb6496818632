//! Human durations as written in saga definitions and configuration:
//! `250ms`, `10s`, `5m`, `2h`, `1d`, and sums such as `1m30s`.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("bad duration `{0}`: expected a number followed by ms, s, m, h or d (e.g. `500ms`, `30s`, `1m30s`)")]
    Malformed(String),
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Parses `1m30s`-style durations. Bare numbers are rejected on purpose: a
/// unit-less `30` is ambiguous (seconds? milliseconds?) and a classic source
/// of timeouts that are a thousand times off.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_string());
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(malformed());
        }
        let number: u128 = s[start..i].parse().map_err(|_| DurationError::Overflow(text.to_string()))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor: u128 = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(malformed()),
        };
        total_ms = total_ms
            .checked_add(number.checked_mul(factor).ok_or_else(|| DurationError::Overflow(text.to_string()))?)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
    }
    let ms = u64::try_from(total_ms).map_err(|_| DurationError::Overflow(text.to_string()))?;
    Ok(Duration::from_millis(ms))
}

/// Formats a duration the way [`parse_duration`] reads it (largest units first).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, factor) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= factor {
            out.push_str(&format!("{}{}", ms / factor, unit));
            ms %= factor;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        let cases = [
            ("250ms", 250),
            ("10s", 10_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1m30s", 90_000),
            (" 1s500ms ", 1_500),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn rejects_unitless_and_garbage() {
        for text in ["30", "s", "10 s", "1.5s", "10sec", "-1s", "1s-"] {
            assert!(parse_duration(text).is_err(), "{text} should be rejected");
        }
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(parse_duration("99999999999999999999999d"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn format_round_trips() {
        for ms in [1u64, 999, 1_000, 90_000, 3_723_004, 86_400_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
