//! Table-driven tests of configuration resolution. Every case goes through
//! [`resolve`], which takes flags, environment and file contents as plain
//! data: the process environment is never read or changed.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use sqsaga_config::{Backend, ConfigErrors, DriftMode, LogLevel, Origin, SETTINGS, Settings, Sources};

const KEY: &str = "0123456789abcdef0123456789abcdef-current";
const OLD_KEY: &str = "fedcba9876543210fedcba9876543210-previous";

/// Name/value pairs: flags (by key) or environment variables.
type Vars<'a> = &'a [(&'a str, &'a str)];

/// A resolution's inputs as data. `file` is the JSON text of config.json.
#[derive(Default)]
struct Case<'a> {
    flags: &'a [(&'a str, &'a str)],
    env: &'a [(&'a str, &'a str)],
    file: Option<&'a str>,
}

/// Resolves `case`, writing the file (if any) to a fresh temp dir as
/// `config.json` and passing it through `SQSAGA_CONFIG`. Error messages name
/// the file by its full path; the helper rewrites it to `config.json` so
/// assertions read like what an operator sees.
fn resolve(case: Case<'_>) -> Result<Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut env: BTreeMap<String, String> = case.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let path = dir.path().join("config.json");
    if let Some(text) = case.file {
        std::fs::write(&path, text).unwrap();
        env.insert("SQSAGA_CONFIG".into(), path.display().to_string());
    }
    let mut sources = Sources::new(&env);
    for (key, value) in case.flags {
        sources = sources.with_flag(key, *value);
    }
    Settings::resolve(&sources)
        .map_err(|e: ConfigErrors| e.to_string().replace(&path.display().to_string(), "config.json"))
}

fn ok(case: Case<'_>) -> Settings {
    match resolve(case) {
        Ok(s) => s,
        Err(e) => panic!("expected a valid configuration, got:\n{e}"),
    }
}

fn err(case: Case<'_>) -> String {
    match resolve(case) {
        Ok(s) => panic!("expected errors, got {s:?}"),
        Err(e) => e,
    }
}

/// The report with the column padding squeezed to one space, so expected
/// lines do not depend on the longest key.
fn squash(report: &str) -> String {
    report
        .lines()
        .map(|l| l.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The effective value of `key`.
fn effective(s: &Settings, key: &str) -> Value {
    s.effective().get(key).cloned().unwrap_or(Value::Null)
}

#[test]
fn defaults_with_nothing_set() {
    let s = ok(Case::default());
    assert_eq!(s.log_level, LogLevel::Info);
    assert_eq!(s.backend, Backend::Embedded);
    assert_eq!(s.data_dir, PathBuf::from("./.sqsaga"));
    assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(s.concurrency, 4);
    assert_eq!(s.visibility_timeout, Duration::from_secs(30));
    assert_eq!(s.wait_time, Duration::from_secs(20));
    assert_eq!(s.drain_timeout, Duration::from_secs(30));
    assert_eq!(s.queue_prefix, "sqsaga-");
    assert_eq!(s.table, "sqsaga-sagas");
    assert_eq!(s.drift_mode, DriftMode::Observe);
    assert_eq!(s.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(s.max_receive_count, 5);
    assert_eq!(s.max_in_flight, 200);
    assert!(!s.require_signature);
    assert_eq!(s.signature_max_age, Duration::from_secs(300));
    assert_eq!(s.queue_url, None);
    assert_eq!(s.signing_key, None);
    assert!(s.instance_id.ends_with(&format!("-{}", std::process::id())));
    assert_eq!(s.origin("concurrency"), Some(&Origin::Default));
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let file = r#"{"data_dir": "/from/file", "log_level": "debug", "concurrency": 8,
                   "service": "payment", "wait_time": 5}"#;
    // (flags, env, key, expected effective value, expected origin)
    let cases: &[(Vars, Vars, &str, Value, &str)] = &[
        (&[], &[], "data_dir", json!("/from/file"), "file"),
        (&[], &[("SQSAGA_DATA_DIR", "/from/env")], "data_dir", json!("/from/env"), "env SQSAGA_DATA_DIR"),
        (
            &[("data_dir", "/from/flag")],
            &[("SQSAGA_DATA_DIR", "/from/env")],
            "data_dir",
            json!("/from/flag"),
            "flag --data-dir",
        ),
        (&[], &[], "service", json!("payment"), "file"),
        (
            &[("service", "inventory")],
            &[("SQSAGA_SERVICE", "notification")],
            "service",
            json!("inventory"),
            "flag --service",
        ),
        (&[], &[], "log_level", json!("debug"), "file"),
        (&[], &[("LOG_LEVEL", "WARN")], "log_level", json!("warn"), "env LOG_LEVEL"),
        (&[], &[], "concurrency", json!(8), "file"),
        (&[], &[("SQSAGA_CONCURRENCY", "16")], "concurrency", json!(16), "env SQSAGA_CONCURRENCY"),
        (&[], &[], "wait_time", json!("5s"), "file"),
        (&[], &[("SQSAGA_WAIT_TIME", "10s")], "wait_time", json!("10s"), "env SQSAGA_WAIT_TIME"),
        (&[], &[], "table", json!("sqsaga-sagas"), "default"),
        // An empty variable counts as unset, as with the seed's os.Getenv.
        (&[], &[("SQSAGA_CONCURRENCY", "")], "concurrency", json!(8), "file"),
    ];
    for (flags, env, key, expected, origin) in cases {
        let s = ok(Case { flags, env, file: Some(file) });
        assert_eq!(effective(&s, key), *expected, "{key} with flags {flags:?} env {env:?}");
        let shown = s.origin(key).unwrap().to_string();
        assert!(shown.starts_with(origin), "{key}: origin {shown}, expected {origin}");
    }
}

#[test]
fn region_prefers_region_over_aws_region_over_file() {
    let cases: &[(Vars, Option<&str>, Option<&str>)] = &[
        (&[("REGION", "eu-west-1"), ("AWS_REGION", "us-east-1")], None, Some("eu-west-1")),
        (&[("AWS_REGION", "us-east-1")], None, Some("us-east-1")),
        (&[("AWS_REGION", "us-east-1")], Some(r#"{"region": "ap-south-1"}"#), Some("us-east-1")),
        (&[], Some(r#"{"region": "ap-south-1"}"#), Some("ap-south-1")),
        (&[], None, None),
    ];
    for (env, file, expected) in cases {
        let s = ok(Case { env, file: *file, ..Case::default() });
        assert_eq!(s.region.as_deref(), *expected, "env {env:?} file {file:?}");
    }
    let s = ok(Case { env: &[("AWS_REGION", "us-east-1")], ..Case::default() });
    assert_eq!(s.origin("region"), Some(&Origin::Env("AWS_REGION")));
}

#[test]
fn the_seed_paths_work_as_the_seed_wrote_them() {
    // Kubernetes: the Go worker's variables.
    let s = ok(Case {
        env: &[
            ("SQS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/order-queue"),
            ("REGION", "us-east-1"),
            ("LOG_LEVEL", "info"),
        ],
        ..Case::default()
    });
    assert_eq!(s.queue_url.as_deref(), Some("https://sqs.us-east-1.amazonaws.com/123456789012/order-queue"));
    // Chef: the rendered config.json.
    let s = ok(Case {
        file: Some(
            r#"{"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q", "dlq_url": "https://sqs.eu-west-1.amazonaws.com/1/q-dlq",
                "region": "eu-west-1", "log_level": "info"}"#,
        ),
        ..Case::default()
    });
    assert_eq!(s.dlq_url.as_deref(), Some("https://sqs.eu-west-1.amazonaws.com/1/q-dlq"));
    assert_eq!(s.region.as_deref(), Some("eu-west-1"));
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let e = err(Case {
        flags: &[("data_dir", "/ok"), ("http_addr", "0.0.0.0:1")],
        env: &[
            ("SQSAGA_CONCURRENCY", "abc"),
            ("SQSAGA_VISIBILITY_TIMEOUT", "forever"),
            ("LOG_LEVEL", "verbose"),
            ("SQSAGA_BACKEND", "kafka"),
            ("SQSAGA_HTTP_ADDR", "localhost:8080"),
            ("SQSAGA_SERVICE", "Inventory"),
            ("SQSAGA_REQUIRE_SIGNATURE", "yes"),
            ("SQS_QUEUE_URL", "sqs://nope"),
            ("REGION", "mars"),
            ("SQSAGA_SIGNING_KEY", "short"),
            ("SQSAGA_CONCURENCY", "4"),
        ],
        file: Some(r#"{"wait_time": "30s", "max_receive_count": "5", "queue_ur": "x", "drift_mode": 1}"#),
    });
    let expected = [
        "SQSAGA_CONCURENCY: unknown variable (did you mean `SQSAGA_CONCURRENCY`?)",
        "--http-addr: `http_addr` has no command-line flag; set SQSAGA_HTTP_ADDR or `http_addr` in the file",
        "config.json: unknown key `queue_ur` (did you mean `queue_url`?)",
        "SQS_QUEUE_URL=sqs://nope: expected an http:// or https:// URL",
        "REGION=mars: expected an AWS region such as `us-east-1`",
        "LOG_LEVEL=verbose: expected one of trace, debug, info, warn, error",
        "SQSAGA_BACKEND=kafka: expected one of embedded, aws",
        "SQSAGA_HTTP_ADDR=localhost:8080: expected a socket address",
        "SQSAGA_SERVICE=Inventory: expected text, up to 64 characters of [a-z0-9-]",
        "SQSAGA_CONCURRENCY=abc: expected an integer from 1 to 256",
        "SQSAGA_VISIBILITY_TIMEOUT=forever: expected a duration such as `30s`, `5m` or `1m30s`",
        "config.json: `wait_time` = \"30s\": must be at most 20s",
        "config.json: `drift_mode` = 1: expected a string, found a number",
        "config.json: `max_receive_count` = \"5\": expected an integer from 1 to 1000, found a string",
        "SQSAGA_SIGNING_KEY=<redacted>: must be at least 32 bytes",
        "SQSAGA_REQUIRE_SIGNATURE=yes: expected true, false, 1 or 0",
    ];
    let lines: Vec<&str> = e.lines().collect();
    for want in expected {
        assert!(lines.iter().any(|l| l.starts_with(want)), "missing `{want}` in:\n{e}");
    }
    assert_eq!(lines.len(), expected.len(), "unexpected extra problems:\n{e}");
    assert!(!e.contains("short"), "a secret leaked into the errors:\n{e}");
}

#[test]
fn participant_db_is_sqlite_or_postgres_by_flag_env_or_file() {
    use sqsaga_config::DatabaseUrl;
    let db = |case: Case<'_>| ok(case).participant_db;
    assert_eq!(db(Case::default()), None);
    assert_eq!(
        db(Case { env: &[("SQSAGA_PARTICIPANT_DB", "sqlite:/var/lib/inv.db")], ..Case::default() }),
        Some(DatabaseUrl::Sqlite("/var/lib/inv.db".into()))
    );
    assert_eq!(
        db(Case {
            flags: &[("participant_db", "postgres://app@db/orders")],
            env: &[("SQSAGA_PARTICIPANT_DB", "sqlite:/x.db")],
            file: Some(r#"{"participant_db": "sqlite:/y.db"}"#),
        }),
        Some(DatabaseUrl::Postgres("postgres://app@db/orders".into()))
    );
    // Bad values name the setting in each source; a password never shows.
    let e = err(Case {
        flags: &[("participant_db", "mysql://app:hunter2@db/orders")],
        env: &[("SQSAGA_PARTICIPANT_DB", "/var/lib/inv.db")],
        file: Some(r#"{"participant_db": "sqlite:"}"#),
    });
    for want in [
        "--participant-db=mysql://app:<redacted>@db/orders: expected `sqlite:<path>` or a `postgres://",
        "SQSAGA_PARTICIPANT_DB=/var/lib/inv.db: expected `sqlite:<path>` or a `postgres://",
        "config.json: `participant_db` = \"sqlite:\": `sqlite:` needs a path",
    ] {
        assert!(e.lines().any(|l| l.starts_with(want)), "missing `{want}` in:\n{e}");
    }
    assert!(!e.contains("hunter2"), "a password leaked into the errors:\n{e}");
    let s = ok(Case { env: &[("SQSAGA_PARTICIPANT_DB", "postgres://app:hunter2@db/orders")], ..Case::default() });
    assert_eq!(effective(&s, "participant_db"), json!("postgres://app:<redacted>@db/orders"));
    assert!(!s.redacted_report().contains("hunter2"));
}

#[test]
fn range_limits_are_enforced() {
    // (env var, value, expected message; None = accepted)
    let cases = [
        ("SQSAGA_CONCURRENCY", "0", Some("expected an integer from 1 to 256")),
        ("SQSAGA_CONCURRENCY", "256", None),
        ("SQSAGA_CONCURRENCY", "257", Some("expected an integer from 1 to 256")),
        ("SQSAGA_WAIT_TIME", "0s", None),
        ("SQSAGA_WAIT_TIME", "21s", Some("must be at most 20s")),
        ("SQSAGA_VISIBILITY_TIMEOUT", "500ms", Some("must be at least 1s")),
        ("SQSAGA_VISIBILITY_TIMEOUT", "1500ms", Some("must be a whole number of seconds")),
        ("SQSAGA_VISIBILITY_TIMEOUT", "12h", None),
        ("SQSAGA_VISIBILITY_TIMEOUT", "12h1s", Some("must be at most 12h")),
        ("SQSAGA_VISIBILITY_TIMEOUT", "30", Some("expected a duration")),
        ("SQSAGA_MAX_RECEIVE_COUNT", "1001", Some("expected an integer from 1 to 1000")),
        ("SQSAGA_HTTP_ADDR", "0.0.0.0:0", None),
        ("SQSAGA_HTTP_ADDR", "[::1]:9090", None),
        ("SQSAGA_TABLE", "ab", Some("expected text, 3 to 255 characters")),
        ("SQSAGA_REQUIRE_SIGNATURE", "0", None),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000", None),
    ];
    for (name, value, expected) in cases {
        let result = resolve(Case { env: &[(name, value)], ..Case::default() });
        match (result, expected) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) => {
                assert!(e.starts_with(&format!("{name}={value}: {want}")), "{name}={value}: got {e}")
            }
            (Ok(_), Some(want)) => panic!("{name}={value}: accepted, expected `{want}`"),
            (Err(e), None) => panic!("{name}={value}: rejected: {e}"),
        }
    }
}

#[test]
fn file_values_may_be_integer_seconds_and_must_have_the_right_type() {
    let s = ok(Case { file: Some(r#"{"visibility_timeout": 90, "require_signature": false}"#), ..Case::default() });
    assert_eq!(s.visibility_timeout, Duration::from_secs(90));
    let cases = [
        (r#"{"concurrency": 2.5}"#, "`concurrency` = 2.5: expected an integer from 1 to 256, found a number"),
        (r#"{"concurrency": -1}"#, "`concurrency` = -1: expected an integer from 1 to 256, found a number"),
        (r#"{"require_signature": "true"}"#, "`require_signature` = \"true\": expected true or false, found a string"),
        (
            r#"{"drain_timeout": true}"#,
            "`drain_timeout` = true: expected a duration such as \"30s\" or a whole number of seconds, found a boolean",
        ),
        (r#"{"queue_url": ["a"]}"#, "`queue_url` = [\"a\"]: expected a string, found an array"),
    ];
    for (file, want) in cases {
        let e = err(Case { file: Some(file), ..Case::default() });
        assert_eq!(e, format!("config.json: {want}"), "{file}");
    }
}

#[test]
fn unknown_names_get_suggestions() {
    let cases: &[(Vars, Option<&str>, &str)] = &[
        (&[], Some(r#"{"queue_ur": "x"}"#), "config.json: unknown key `queue_ur` (did you mean `queue_url`?)"),
        (
            &[],
            Some(r#"{"SQS_QUEUE_URL": "x"}"#),
            "config.json: unknown key `SQS_QUEUE_URL` (did you mean `queue_url`?)",
        ),
        (&[], Some(r#"{"colour": "blue"}"#), "config.json: unknown key `colour`"),
        (
            &[("SQSAGA_CONCURENCY", "4")],
            None,
            "SQSAGA_CONCURENCY: unknown variable (did you mean `SQSAGA_CONCURRENCY`?)",
        ),
        (&[("SQSAGA_QUEUE_URL", "x")], None, "SQSAGA_QUEUE_URL: unknown variable (did you mean `SQS_QUEUE_URL`?)"),
        (&[("SQSAGA_REGION", "x")], None, "SQSAGA_REGION: unknown variable (did you mean `REGION`?)"),
        (&[("SQSAGA_FOO", "x")], None, "SQSAGA_FOO: unknown variable"),
    ];
    for (env, file, want) in cases {
        assert_eq!(err(Case { env, file: *file, ..Case::default() }), *want);
    }
    // Other variables are somebody else's.
    ok(Case { env: &[("PATH", "/bin"), ("AWS_PROFILE", "dev"), ("HOME", "/root")], ..Case::default() });
}

#[test]
fn unreadable_files_are_named() {
    let env = BTreeMap::from([("SQSAGA_CONFIG".to_string(), "/nonexistent/sqsaga.json".to_string())]);
    let e = Settings::resolve(&Sources::new(&env)).unwrap_err().to_string();
    assert!(e.starts_with("/nonexistent/sqsaga.json: cannot read config file"), "{e}");
    assert!(err(Case { file: Some("{ nope"), ..Case::default() }).starts_with("config.json: not valid JSON"));
    assert_eq!(
        err(Case { file: Some("[1]"), ..Case::default() }),
        "config.json: expected a JSON object of settings, found an array"
    );
    // --config wins over SQSAGA_CONFIG.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flag.json");
    std::fs::write(&path, r#"{"log_level": "error"}"#).unwrap();
    let s = Settings::resolve(&Sources::new(&env).with_config_path(&path)).unwrap();
    assert_eq!(s.log_level, LogLevel::Error);
    assert_eq!(s.config_file.as_deref(), Some(path.as_path()));
}

#[test]
fn the_sqs_endpoint_is_off_by_default_and_open_to_the_network_only_with_credentials() {
    assert_eq!(ok(Case::default()).sqs_endpoint_addr, None);
    let s = ok(Case { env: &[("SQSAGA_SQS_ENDPOINT_ADDR", "127.0.0.1:9324")], ..Case::default() });
    assert_eq!(s.sqs_endpoint_addr, Some("127.0.0.1:9324".parse().unwrap()));
    let e = err(Case { env: &[("SQSAGA_SQS_ENDPOINT_ADDR", "0.0.0.0:9324")], ..Case::default() });
    assert!(e.starts_with("SQSAGA_SQS_ENDPOINT_ADDR=0.0.0.0:9324: a non-loopback address opens the queues"), "{e}");
    let s = ok(Case {
        env: &[("SQSAGA_SQS_ENDPOINT_ADDR", "0.0.0.0:9324"), ("SQSAGA_SQS_ENDPOINT_ACCESS_KEY_ID", "AKIDSQSAGA")],
        ..Case::default()
    });
    assert_eq!(s.sqs_endpoint_access_key_id.as_deref(), Some("AKIDSQSAGA"));
    let e = err(Case { env: &[("SQSAGA_SQS_ENDPOINT_SECRET_ACCESS_KEY", "0123456789abcdef")], ..Case::default() });
    assert!(e.contains("a secret access key needs its key id"), "{e}");
}

#[test]
fn the_admin_api_is_open_to_the_network_only_with_an_admin_token() {
    assert_eq!(ok(Case::default()).admin_addr, None);
    let s = ok(Case { env: &[("SQSAGA_ADMIN_ADDR", "127.0.0.1:9090")], ..Case::default() });
    assert_eq!(s.admin_addr, Some("127.0.0.1:9090".parse().unwrap()));
    let e = err(Case { env: &[("SQSAGA_ADMIN_ADDR", "0.0.0.0:9090")], ..Case::default() });
    assert!(e.starts_with("SQSAGA_ADMIN_ADDR=0.0.0.0:9090: a non-loopback address opens the admin API"), "{e}");
    assert!(e.contains("SQSAGA_ADMIN_TOKEN"), "{e}");
    // A read token alone is not enough: the listener must not be open without an admin token.
    let e = err(Case {
        env: &[("SQSAGA_ADMIN_ADDR", "0.0.0.0:9090"), ("SQSAGA_ADMIN_READ_TOKEN", "read-0123456789abcdef")],
        ..Case::default()
    });
    assert!(e.contains("SQSAGA_ADMIN_TOKEN"), "{e}");
    for token in [("SQSAGA_ADMIN_TOKEN", "admin-0123456789abcdef"), ("SQSAGA_ADMIN_TOKEN_FILE", "/run/secrets/admin")] {
        let s = ok(Case { env: &[("SQSAGA_ADMIN_ADDR", "0.0.0.0:9090"), token], ..Case::default() });
        assert_eq!(s.admin_addr, Some("0.0.0.0:9090".parse().unwrap()));
    }
    let e = err(Case { env: &[("SQSAGA_ADMIN_TOKEN", "short")], ..Case::default() });
    assert_eq!(e, "SQSAGA_ADMIN_TOKEN=<redacted>: must be at least 16 bytes");
}

#[test]
fn signature_rules() {
    let e = err(Case { env: &[("SQSAGA_REQUIRE_SIGNATURE", "true")], ..Case::default() });
    assert_eq!(
        e,
        "SQSAGA_REQUIRE_SIGNATURE=true: needs a signing key: set SQSAGA_SIGNING_KEY (or `signing_key` in the file)"
    );
    let e = err(Case { env: &[("SQSAGA_SIGNING_KEY_PREVIOUS", OLD_KEY)], ..Case::default() });
    assert!(e.starts_with("SQSAGA_SIGNING_KEY_PREVIOUS=<redacted>: a previous key is only accepted"), "{e}");
    // A too-short key is reported once, not again as "missing".
    let e = err(Case { env: &[("SQSAGA_REQUIRE_SIGNATURE", "1"), ("SQSAGA_SIGNING_KEY", "short")], ..Case::default() });
    assert_eq!(e, "SQSAGA_SIGNING_KEY=<redacted>: must be at least 32 bytes");
    let s = ok(Case {
        env: &[
            ("SQSAGA_REQUIRE_SIGNATURE", "1"),
            ("SQSAGA_SIGNING_KEY", KEY),
            ("SQSAGA_SIGNING_KEY_PREVIOUS", OLD_KEY),
        ],
        ..Case::default()
    });
    assert!(s.require_signature);
    assert_eq!(s.signing_key.as_ref().map(|k| k.expose()), Some(KEY));
}

#[test]
fn secrets_never_show_except_as_a_hash() {
    let s = ok(Case {
        env: &[("SQSAGA_SIGNING_KEY", KEY)],
        file: Some(&format!(r#"{{"signing_key_previous": "{OLD_KEY}"}}"#)),
        ..Case::default()
    });
    let views = [
        format!("{s:?}"),
        s.redacted_report(),
        serde_json::to_string(&s.effective()).unwrap(),
        format!("{}", s.signing_key.as_ref().unwrap()),
    ];
    for view in &views {
        assert!(!view.contains(KEY) && !view.contains(OLD_KEY), "secret leaked:\n{view}");
    }
    assert!(squash(&views[1]).contains("signing_key = <redacted> (env SQSAGA_SIGNING_KEY)"), "{}", views[1]);
    let hashed = effective(&s, "signing_key");
    let hashed = hashed.as_str().unwrap();
    assert!(hashed.starts_with("sha256:") && hashed.len() == 71, "{hashed}");
    // A different key gives a different hash (rotation is visible as drift).
    let other = ok(Case { env: &[("SQSAGA_SIGNING_KEY", OLD_KEY)], ..Case::default() });
    assert_ne!(effective(&other, "signing_key"), effective(&s, "signing_key"));
}

#[test]
fn config_hash_tracks_shared_settings_only() {
    let hash = |env: &[(&str, &str)]| ok(Case { env, ..Case::default() }).config_hash();
    let base = hash(&[("LOG_LEVEL", "info"), ("SQSAGA_INSTANCE_ID", "a")]);
    assert_eq!(base.len(), 64);
    assert_eq!(base, hash(&[("LOG_LEVEL", "info"), ("SQSAGA_INSTANCE_ID", "a")]), "stable across runs");
    assert_eq!(base, hash(&[("LOG_LEVEL", "info"), ("SQSAGA_INSTANCE_ID", "b")]), "instance_id is per instance");
    assert_eq!(base, hash(&[]), "a default equals the same value set explicitly");
    assert_ne!(base, hash(&[("LOG_LEVEL", "debug")]), "log_level changes the hash");
    // Same values from the file or the environment: same hash.
    let from_file = ok(Case { file: Some(r#"{"log_level": "debug"}"#), ..Case::default() }).config_hash();
    assert_eq!(from_file, hash(&[("LOG_LEVEL", "debug")]));
    // Pinned, so "stable" holds across processes and builds too. The canonical
    // form must not change by accident: every fleet would look drifted after
    // an upgrade. Adding a setting or changing a default changes it on
    // purpose; then update this value.
    assert_eq!(base, "00525e4c8c475296f04751ce40bc9d499899aa5938c0ff7afda3e4eb78fe22f7");
}

#[test]
fn every_setting_reaches_the_effective_map() {
    let file = json!({
        "queue_url": "https://q/1", "dlq_url": "https://q/2", "region": "us-east-1",
        "log_level": "warn", "backend": "aws", "data_dir": "/d", "http_addr": "0.0.0.0:0",
        "service": "inventory", "instance_id": "i-1", "concurrency": 2,
        "participant_db": "postgres://app:pw@db:5432/orders",
        "visibility_timeout": "1m", "wait_time": "1s", "drain_timeout": "2s",
        "orchestrator_queue_url": "https://q/3", "queue_prefix": "p-", "table": "t-1", "retention": "7d",
        "sqs_preset": "balanced",
        "definitions": "/defs", "fleet_policy": "/fleet.yaml", "drift_mode": "enforce",
        "heartbeat_interval": "3s", "max_receive_count": 7, "max_in_flight": 50, "signing_key": KEY,
        "signing_key_previous": OLD_KEY, "require_signature": true,
        "signature_max_age": "1m", "otlp_endpoint": "http://otel:4317",
        "endpoint_url": "http://127.0.0.1:5000", "sqs_endpoint_addr": "0.0.0.0:9324",
        "sqs_endpoint_access_key_id": "AKIDSQSAGA", "sqs_endpoint_secret_access_key": "0123456789abcdef",
        "admin_addr": "0.0.0.0:9090", "admin_token": "admin-0123456789abcdef", "admin_token_file": "/run/admin",
        "admin_read_token": "read-0123456789abcdef", "admin_read_token_file": "/run/read"
    });
    let s = ok(Case { file: Some(&file.to_string()), ..Case::default() });
    let effective = s.effective();
    for spec in SETTINGS {
        let got = effective.get(spec.key);
        if spec.per_instance {
            assert_eq!(got, None, "{} is per instance", spec.key);
        } else {
            assert!(got.is_some_and(|v| !v.is_null()), "{} missing from effective()", spec.key);
        }
        assert!(file.get(spec.key).is_some(), "test file lacks {}", spec.key);
    }
    assert_eq!(s.backend, Backend::Aws);
    assert_eq!(s.drift_mode, DriftMode::Enforce);
    assert_eq!(s.sqs_preset, sqsaga_config::SqsPreset::Balanced);
    assert_eq!(s.max_in_flight, 50);
    assert_eq!(effective["visibility_timeout"], json!("1m"));
}

#[test]
fn report_lists_every_setting_with_its_source_then_the_hash() {
    let s = ok(Case {
        flags: &[("service", "payment")],
        env: &[("SQSAGA_CONCURRENCY", "8")],
        file: Some(r#"{"log_level": "debug"}"#),
    });
    let report = squash(&s.redacted_report());
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), SETTINGS.len() + 2, "{report}");
    for want in [
        "concurrency = 8 (env SQSAGA_CONCURRENCY)",
        "service = \"payment\" (flag --service)",
        "table = \"sqsaga-sagas\" (default)",
        "signing_key = (unset) (default)",
    ] {
        assert!(lines.contains(&want), "missing `{want}` in\n{report}");
    }
    assert!(lines.iter().any(|l| l.starts_with("log_level = \"debug\" (file ")), "{report}");
    assert!(lines.iter().any(|l| l.starts_with("instance_id") && l.ends_with(", per instance: not hashed)")));
    assert_eq!(lines.last().copied(), Some(format!("config_hash: {}", s.config_hash()).as_str()));
}
