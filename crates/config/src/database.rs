//! The participant database setting (`SQSAGA_PARTICIPANT_DB`): which
//! database a worker's participant keeps its tables and barrier in, as
//! `sqlite:<path>` or a `postgres://` URL. Parsed here so a bad value is a
//! configuration error naming the setting, before any database is touched;
//! opening it is the participant's business.

use std::fmt;
use std::path::PathBuf;

/// Where a participant's own database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (`sqlite:<path>`; `sqlite://<path>` is accepted too).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://user@host:port/db` or `postgresql://...`),
    /// the URL as given, password included.
    Postgres(String),
}

impl DatabaseUrl {
    /// What the setting accepts, for errors and docs.
    pub const EXPECTED: &'static str = "`sqlite:<path>` or a `postgres://user@host:port/database` URL";

    /// Parses a setting's value; the error says what is accepted.
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!("`sqlite:` needs a path; expected {}", DatabaseUrl::EXPECTED));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let rest = text.strip_prefix("postgres://").or_else(|| text.strip_prefix("postgresql://"));
        match rest {
            Some(rest) if !rest.is_empty() && !text.chars().any(char::is_whitespace) => {
                Ok(DatabaseUrl::Postgres(text.to_string()))
            }
            Some(_) => Err(format!("a PostgreSQL URL needs a host and no spaces; expected {}", DatabaseUrl::EXPECTED)),
            None => Err(format!("expected {}", DatabaseUrl::EXPECTED)),
        }
    }

    /// The value with any password replaced by `<redacted>`: what reports,
    /// logs and the config hash see.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_url(url),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A URL fit for logs, reports and `/readyz`: the password of
/// `scheme://user:secret@host/...` and any `password=` query parameter (as
/// libpq reads them) replaced by `<redacted>`; anything else as given. The
/// one redaction every database and endpoint URL goes through.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let authority_end = url[scheme_end..].find(['/', '?']).map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>{}", &authority[at..]),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let rest = &url[authority_end..];
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => rest.to_string(),
    };
    format!("{}{authority}{rest}", &url[..scheme_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_refuses_the_rest() {
        let cases: &[(&str, Option<DatabaseUrl>)] = &[
            ("sqlite:/var/lib/inv.db", Some(DatabaseUrl::Sqlite("/var/lib/inv.db".into()))),
            ("sqlite://rel/inv.db", Some(DatabaseUrl::Sqlite("rel/inv.db".into()))),
            ("postgres://app@db:5432/orders", Some(DatabaseUrl::Postgres("postgres://app@db:5432/orders".into()))),
            ("postgresql://db/orders", Some(DatabaseUrl::Postgres("postgresql://db/orders".into()))),
            ("sqlite:", None),
            ("postgres://", None),
            ("mysql://db/x", None),
            ("/var/lib/inv.db", None),
        ];
        for (text, expected) in cases {
            assert_eq!(DatabaseUrl::parse(text).ok(), *expected, "{text}");
        }
    }

    #[test]
    fn redaction_hides_the_password_only() {
        let cases = [
            ("postgres://app:s3cret@db:5432/orders", "postgres://app:<redacted>@db:5432/orders"),
            ("postgres://app@db/orders", "postgres://app@db/orders"),
            ("postgres://db/orders?user=a", "postgres://db/orders?user=a"),
            ("postgres://db/orders?user=a&password=s3cret", "postgres://db/orders?user=a&password=<redacted>"),
            ("postgres://app:s3cret@db?sslmode=require", "postgres://app:<redacted>@db?sslmode=require"),
        ];
        for (url, shown) in cases {
            assert_eq!(DatabaseUrl::Postgres(url.into()).redacted(), shown);
        }
        assert_eq!(redact_url("http://key:secret@127.0.0.1:5000/x"), "http://key:<redacted>@127.0.0.1:5000/x");
        assert_eq!(redact_url("the DynamoDB endpoint of eu-west-1"), "the DynamoDB endpoint of eu-west-1");
    }
}
