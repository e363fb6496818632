//! Saga definitions from text: every problem kind reported at its
//! `line:col`, defaults applied to valid files, the shipped example, its
//! graph, and the JSON Schema kept in step with the parser.
//!
//! Most cases go through [`problems`] (YAML in, `line:col: message` out) or
//! [`check`] (YAML in, expected problems compared), so a new case is a few
//! lines.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use sqsaga_core::definition::{RetryPolicy, SagaDefinition, StepDefinition};
use sqsaga_core::graph::mermaid;
use sqsaga_core::yaml::{
    DEFAULTS_KEYS, Problem, RETRY_KEYS, SAGA_KEYS, STEP_KEYS, format_problems, parse_definition, parse_definitions,
};

// ---------------------------------------------------------------------------
// Helpers.

/// Every problem of a single-definition text as `line:col: message`; empty
/// when the text is valid.
fn problems(yaml: &str) -> Vec<String> {
    match parse_definition(yaml) {
        Ok(_) => Vec::new(),
        Err(found) => found.iter().map(Problem::to_string).collect(),
    }
}

/// Lines joined with `\n`, so a case's line numbers are its indices + 1.
fn doc(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

/// Whether `yaml` has exactly the `expected` problems, in text order, each
/// given as `(line, col, fragment of the message)`; if not, why.
fn check(case: &str, yaml: &str, expected: &[(usize, usize, &str)]) -> Result<(), String> {
    let got = problems(yaml);
    let matches = got.len() == expected.len()
        && got
            .iter()
            .zip(expected)
            .all(|(g, (line, col, fragment))| g.starts_with(&format!("{line}:{col}: ")) && g.contains(fragment));
    if matches {
        Ok(())
    } else {
        Err(format!("case `{case}`:\n  expected {expected:#?}\n  got {got:#?}\n--- yaml ---\n{yaml}"))
    }
}

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A valid two-step saga, lines 1-13; cases below are variations of it.
const VALID: &[&str] = &[
    "name: s",                  // 1
    "version: 1",               // 2
    "deadline: 1m",             // 3
    "steps:",                   // 4
    "  - name: a",              // 5
    "    service: svc-a",       // 6
    "    action: a.do",         // 7
    "    compensation: a.undo", // 8
    "    contract: a/v1",       // 9
    "  - name: b",              // 10
    "    service: svc-b",       // 11
    "    action: b.do",         // 12
    "    contract: b/v1",       // 13
];

/// `VALID` with line `n` (1-based) replaced by `with` (which may hold
/// several lines, or none).
fn replace(n: usize, with: &[&str]) -> String {
    let mut lines: Vec<&str> = VALID.to_vec();
    lines.splice(n - 1..n, with.iter().copied());
    doc(&lines)
}

/// `VALID` with `extra` inserted before line `n`.
fn insert(n: usize, extra: &[&str]) -> String {
    let mut lines: Vec<&str> = VALID.to_vec();
    lines.splice(n - 1..n - 1, extra.iter().copied());
    doc(&lines)
}

// ---------------------------------------------------------------------------
// One case per problem kind.

#[test]
fn the_base_case_is_valid() {
    assert_eq!(problems(&doc(VALID)), Vec::<String>::new());
}

#[test]
fn each_problem_kind_is_reported_where_it_is() {
    let cases: Vec<Case> = vec![
        // Unknown keys name the key and the allowed ones.
        (
            "unknown top-level key",
            insert(4, &["colour: red"]),
            vec![(
                4,
                1,
                "unknown key `colour`; allowed keys: name, version, description, deadline, input, defaults, steps",
            )],
        ),
        (
            "unknown step key",
            insert(10, &["    owner: team-a"]),
            vec![(10, 5, "steps[0]: unknown key `owner`; allowed keys: name, service, action")],
        ),
        (
            "unknown retry key with a suggestion",
            insert(10, &["    retry: { max_attempts: 3 }"]),
            vec![(10, 14, "steps[0].retry: unknown key `max_attempts` (did you mean `maxAttempts`?)")],
        ),
        (
            "snake_case top-level key is suggested in camelCase",
            insert(10, &["    compensation_retry: {}"]),
            vec![(10, 5, "(did you mean `compensationRetry`?)")],
        ),
        // Wrong types.
        (
            "input schema not a mapping",
            insert(4, &["input: yes"]),
            vec![(4, 8, "input: expected a mapping (a JSON Schema of the start input)")],
        ),
        (
            "version not an integer",
            replace(2, &["version: abc"]),
            vec![(2, 10, "version: expected an integer, found string `abc`")],
        ),
        (
            "version quoted",
            replace(2, &["version: \"1\""]),
            vec![(2, 10, "version: expected an integer, found string `1`")],
        ),
        ("version zero", replace(2, &["version: 0"]), vec![(2, 10, "version: must be an integer from 1")]),
        (
            "version too large",
            replace(2, &["version: 99999999999"]),
            vec![(2, 10, "version: must be an integer from 1")],
        ),
        ("name is a number", replace(1, &["name: 42"]), vec![(1, 7, "name: expected a string, found integer `42`")]),
        ("name is a list", replace(1, &["name: [a, b]"]), vec![(1, 7, "name: expected a string, found a sequence")]),
        (
            "empty value points at its key",
            insert(3, &["description:"]),
            vec![(3, 1, "description: expected a string, found nothing (null)")],
        ),
        (
            "steps is a mapping",
            replace_from(4, &["steps: {}"]),
            vec![(4, 8, "steps: expected a sequence of steps, found a mapping")],
        ),
        (
            "step is a string",
            replace_from(5, &["  - just-a-step"]),
            vec![(5, 5, "steps[0]: step: expected a mapping, found string `just-a-step`")],
        ),
        (
            "document is a list",
            doc(&["- a", "- b"]),
            vec![(1, 1, "saga definition: expected a mapping, found a sequence")],
        ),
        ("key is not a string", insert(4, &["[a]: 1"]), vec![(4, 1, "keys must be plain strings, found a sequence")]),
        // Values that are the right type but wrong.
        (
            "bad saga name",
            replace(1, &["name: Create Order"]),
            vec![(1, 7, "name: `Create Order` is not a valid name")],
        ),
        (
            "step name starting with a digit",
            replace(5, &["  - name: 1st"]),
            vec![(5, 11, "steps[0].name: `1st` is not a valid name")],
        ),
        (
            "step name that is a number",
            replace(5, &["  - name: 1"]),
            vec![(5, 11, "steps[0].name: expected a string, found integer `1`")],
        ),
        (
            "bad step name chars",
            replace(5, &["  - name: a.b"]),
            vec![(5, 11, "steps[0].name: `a.b` is not a valid name")],
        ),
        (
            "bad service",
            replace(6, &["    service: Svc_A"]),
            vec![(6, 14, "steps[0].service: `Svc_A` is not a valid service name")],
        ),
        (
            "action with a space",
            replace(7, &["    action: a do"]),
            vec![(7, 13, "steps[0].action: `a do` must not contain whitespace")],
        ),
        ("empty action", replace(7, &["    action: ''"]), vec![(7, 13, "steps[0].action: must not be empty")]),
        (
            "bad contract",
            replace(9, &["    contract: a"]),
            vec![(9, 15, "steps[0].contract: `a` is not a contract: expected `name/vN`")],
        ),
        ("contract v0", replace(9, &["    contract: a/v0"]), vec![(9, 15, "is not a contract")]),
        // Durations use DurationError's message.
        (
            "bad deadline",
            replace(3, &["deadline: 5 minutes"]),
            vec![(3, 11, "deadline: bad duration `5 minutes`: expected a number followed by ms, s, m, h or d")],
        ),
        (
            "bare number timeout",
            insert(10, &["    timeout: 30"]),
            vec![(10, 14, "steps[0].timeout: bad duration `30`")],
        ),
        ("zero deadline", replace(3, &["deadline: 0s"]), vec![(3, 11, "deadline: must be longer than zero")]),
        (
            "zero timeout",
            insert(10, &["    timeout: 0ms"]),
            vec![(10, 14, "steps[0].timeout: must be longer than zero")],
        ),
        (
            "duration as a mapping",
            replace(3, &["deadline: {}"]),
            vec![(3, 11, "deadline: expected a duration such as `30s`, found a mapping")],
        ),
        // Missing required keys point at the mapping that lacks them.
        ("missing deadline", replace(3, &[]), vec![(1, 1, "missing required key `deadline`")]),
        ("missing steps", doc(&VALID[..3]), vec![(1, 1, "missing required key `steps`")]),
        ("missing service", replace(6, &[]), vec![(5, 5, "steps[0]: missing required key `service`")]),
        ("missing contract", replace(13, &[]), vec![(10, 5, "steps[1]: missing required key `contract`")]),
        // Saga-level rules.
        ("empty steps", replace_from(4, &["steps: []"]), vec![(4, 8, "steps: a saga needs at least one step")]),
        (
            "duplicate step names",
            replace(10, &["  - name: a"]),
            vec![(10, 11, "duplicate step name `a` (first used on line 5)")],
        ),
        ("duplicate key", insert(2, &["name: t"]), vec![(2, 1, "duplicate key `name` (first on line 1)")]),
        (
            "duplicate step key",
            insert(7, &["    service: svc-c"]),
            vec![(7, 5, "steps[0]: duplicate key `service` (first on line 6)")],
        ),
        (
            "compensable step after one that is not",
            doc(&[
                "name: s",
                "version: 1",
                "deadline: 1m",
                "steps:",
                "  - { name: a, service: s, action: a.do, contract: a/v1 }",
                "  - { name: b, service: s, action: b.do, contract: b/v1, compensation: b.undo }",
            ]),
            vec![(
                6,
                72,
                "step `b` has a compensation but comes after `a`, which cannot be compensated; \
                 steps without compensation must come last",
            )],
        ),
        (
            "timeout not shorter than the deadline",
            insert(10, &["    timeout: 1m"]),
            vec![(10, 14, "steps[0].timeout: 1m must be shorter than the saga deadline 1m")],
        ),
        (
            "default timeout not shorter than the deadline",
            insert(4, &["defaults: { timeout: 2m }"]),
            vec![(4, 22, "defaults.timeout: 2m must be shorter than the saga deadline 1m")],
        ),
        (
            "zero queueTimeout",
            insert(10, &["    queueTimeout: 0s"]),
            vec![(10, 19, "steps[0].queueTimeout: must be longer than zero")],
        ),
        (
            "queueTimeout not shorter than the deadline",
            insert(10, &["    queueTimeout: 90s"]),
            vec![(10, 19, "steps[0].queueTimeout: 1m30s must be shorter than the saga deadline 1m")],
        ),
        (
            "default queueTimeout not shorter than the deadline",
            insert(4, &["defaults: { queueTimeout: 1m }"]),
            vec![(4, 27, "defaults.queueTimeout: 1m must be shorter than the saga deadline 1m")],
        ),
        (
            "built-in timeout not shorter than the deadline",
            replace(3, &["deadline: 30s"]),
            vec![(3, 11, "deadline: 30s is not longer than the default step timeout 30s used by steps `a`, `b`")],
        ),
        (
            "the built-in timeout check still runs when a step has other problems",
            replace(3, &["deadline: 20s"]).replace("service: svc-b", "service: B"),
            vec![
                (3, 11, "deadline: 20s is not longer than the default step timeout 30s used by steps `a`, `b`"),
                (11, 14, "steps[1].service: `B` is not a valid service name"),
            ],
        ),
        (
            "one step on the built-in timeout",
            replace(3, &["deadline: 20s"]).replace("    contract: b/v1\n", "    contract: b/v1\n    timeout: 5s\n"),
            vec![(3, 11, "used by step `a`; set `timeout` on the step or in `defaults`")],
        ),
        // Retry policies.
        (
            "retry values out of range",
            insert(10, &["    retry: { maxAttempts: 0, multiplier: 0.5, jitter: 1.5, initialBackoff: 1x }"]),
            vec![
                (10, 27, "steps[0].retry.maxAttempts: must be an integer from 1"),
                (10, 42, "steps[0].retry.multiplier: must be a number of at least 1.0, found 0.5"),
                (10, 55, "steps[0].retry.jitter: must be a number from 0.0 to 1.0, found 1.5"),
                (10, 76, "steps[0].retry.initialBackoff: bad duration `1x`"),
            ],
        ),
        (
            "retry wrong type",
            insert(10, &["    retry: 3"]),
            vec![(10, 12, "steps[0].retry: retry policy: expected a mapping, found integer `3`")],
        ),
        (
            "multiplier as a string",
            insert(10, &["    retry: { multiplier: fast }"]),
            vec![(10, 26, "steps[0].retry.multiplier: expected a number, found string `fast`")],
        ),
        (
            "initial backoff above max",
            insert(10, &["    compensationRetry: { initialBackoff: 5s, maxBackoff: 1s }"]),
            vec![(10, 42, "steps[0].compensationRetry: initialBackoff 5s must not exceed maxBackoff 1s")],
        ),
        (
            "initial backoff above an inherited max",
            insert(4, &["defaults:", "  retry: { initialBackoff: 10ms, maxBackoff: 100ms }"])
                .replace("    contract: a/v1\n", "    contract: a/v1\n    retry: { initialBackoff: 1s }\n"),
            vec![(12, 30, "steps[0].retry: initialBackoff 1s must not exceed maxBackoff 100ms (inherited)")],
        ),
        (
            "a bad pair in defaults is reported once, not per step",
            insert(4, &["defaults:", "  retry: { initialBackoff: 1m, maxBackoff: 1s }"]),
            vec![(5, 28, "defaults.retry: initialBackoff 1m must not exceed maxBackoff 1s")],
        ),
        (
            "unknown defaults key",
            insert(4, &["defaults: { deadline: 1m }"]),
            vec![(
                4,
                13,
                "defaults: unknown key `deadline`; allowed keys: timeout, queueTimeout, retry, compensationRetry",
            )],
        ),
        // YAML itself.
        ("syntax error", replace(6, &["    service: [svc-a"]), vec![(7, 11, "YAML syntax error")]),
        (
            "bad indentation",
            replace(6, &["      service: svc-a"]),
            vec![(6, 14, "YAML syntax error: mapping values are not allowed")],
        ),
        (
            "alias",
            replace(11, &["    service: *svc"]).replace("service: svc-a", "service: &svc svc-a"),
            vec![(11, 14, "aliases (`*name`) are not supported")],
        ),
        ("unknown alias", replace(11, &["    service: *nope"]), vec![(11, 14, "YAML syntax error")]),
        ("empty text", String::new(), vec![(1, 1, "no saga definition found")]),
        ("only comments", "# nothing here\n".to_string(), vec![(1, 1, "no saga definition found")]),
        (
            "two documents where one is expected",
            doc(VALID) + "---\n" + &doc(VALID),
            vec![(
                15,
                1,
                "expected a single saga definition, but another document starts here (the first is on line 1)",
            )],
        ),
    ];
    let failures: Vec<String> =
        cases.iter().filter_map(|(case, yaml, expected)| check(case, yaml, expected).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// A case name, its YAML, and the problems expected as `(line, col, fragment)`.
type Case = (&'static str, String, Vec<(usize, usize, &'static str)>);

/// `VALID` cut before line `n`, with `tail` appended.
fn replace_from(n: usize, tail: &[&str]) -> String {
    let mut lines: Vec<&str> = VALID[..n - 1].to_vec();
    lines.extend_from_slice(tail);
    doc(&lines)
}

#[test]
fn every_problem_in_a_file_is_reported() {
    let yaml = read("crates/core/tests/fixtures/many_problems.yaml");
    let got = problems(&yaml);
    let expected: &[(usize, usize, &str)] = &[
        (3, 1, "missing required key `version`"),
        (3, 1, "missing required key `deadline`"),
        (4, 1, "duplicate key `name` (first on line 3)"),
        (5, 1, "unknown key `dedline` (did you mean `deadline`?)"),
        (7, 5, "steps[0]: missing required key `contract`"),
        (8, 14, "steps[0].service: `Inventory` is not a valid service name"),
        (10, 14, "steps[0].timeout: bad duration `ten seconds`"),
        (11, 5, "steps[0]: unknown key `retries` (did you mean `retry`?)"),
        (15, 19, "step `charge` has a compensation but comes after `reserve`, which cannot be compensated"),
        (17, 11, "duplicate step name `reserve` (first used on line 7)"),
        (21, 22, "steps[2].retry.jitter: must be a number from 0.0 to 1.0, found 2"),
    ];
    let want: Vec<String> = expected.iter().map(|(l, c, m)| format!("{l}:{c}: …{m}…")).collect();
    assert_eq!(got.len(), expected.len(), "expected {want:#?}\ngot {got:#?}");
    for (g, (line, col, fragment)) in got.iter().zip(expected) {
        assert!(g.starts_with(&format!("{line}:{col}: ")) && g.contains(fragment), "expected {want:#?}\ngot {got:#?}");
    }
}

#[test]
fn problems_are_formatted_with_the_file_name() {
    let Err(found) = parse_definition(&replace(2, &["version: abc"])) else {
        panic!("expected problems");
    };
    assert_eq!(
        format_problems("sagas/s.yaml", &found),
        "sagas/s.yaml:2:10: version: expected an integer, found string `abc`\n"
    );
}

// ---------------------------------------------------------------------------
// Valid definitions.

fn policy(max_attempts: u32, initial_ms: u64, max_ms: u64, multiplier: f64, jitter: f64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(initial_ms),
        max_backoff: Duration::from_millis(max_ms),
        multiplier,
        jitter,
    }
}

#[test]
fn a_valid_file_becomes_the_expected_definition_with_defaults_applied() {
    let yaml = doc(&[
        "name: pay-later",
        "version: 3",
        "description: \"Two steps: one inherits, one overrides.\"",
        "deadline: 1h",
        "defaults:",
        "  timeout: 45s",
        "  queueTimeout: 5m",
        "  retry: { maxAttempts: 4, initialBackoff: 1s }",
        "  compensationRetry: { jitter: 0 }",
        "steps:",
        "  - name: hold",
        "    service: wallet",
        "    action: wallet.hold",
        "    compensation: wallet.release",
        "    contract: wallet/v2",
        "  - name: settle",
        "    service: ledger-2",
        "    action: ledger.settle",
        "    contract: ledger/v10",
        "    timeout: 1m30s",
        "    queueTimeout: 2m",
        "    retry: { maxBackoff: 1m, multiplier: 3 }",
        "    compensationRetry: { maxAttempts: 2 }",
    ]);
    let got = parse_definition(&yaml).unwrap_or_else(|p| panic!("{}", format_problems("valid", &p)));
    let expected = SagaDefinition {
        input_schema: None,
        name: "pay-later".into(),
        version: 3,
        description: Some("Two steps: one inherits, one overrides.".into()),
        deadline: Duration::from_secs(3600),
        steps: vec![
            StepDefinition {
                name: "hold".into(),
                service: "wallet".into(),
                action: "wallet.hold".into(),
                compensation: Some("wallet.release".into()),
                timeout: Duration::from_secs(45),
                // defaults.queueTimeout.
                queue_timeout: Some(Duration::from_secs(300)),
                // defaults.retry over the built-in policy.
                retry: policy(4, 1_000, 10_000, 2.0, 0.2),
                // defaults.compensationRetry over the built-in compensation policy (10 attempts).
                compensation_retry: policy(10, 200, 10_000, 2.0, 0.0),
                contract: "wallet/v2".into(),
            },
            StepDefinition {
                name: "settle".into(),
                service: "ledger-2".into(),
                action: "ledger.settle".into(),
                compensation: None,
                timeout: Duration::from_secs(90),
                queue_timeout: Some(Duration::from_secs(120)),
                // Field by field: the step's own, then defaults, then built-in.
                retry: policy(4, 1_000, 60_000, 3.0, 0.2),
                compensation_retry: policy(2, 200, 10_000, 2.0, 0.0),
                contract: "ledger/v10".into(),
            },
        ],
    };
    assert_eq!(got, expected);
}

#[test]
fn without_defaults_the_built_in_policies_apply() {
    let def = parse_definition(&doc(VALID)).unwrap_or_else(|p| panic!("{}", format_problems("valid", &p)));
    let step = &def.steps[0];
    assert_eq!(step.timeout, Duration::from_secs(30));
    assert_eq!(step.retry, RetryPolicy::default());
    assert_eq!(step.compensation_retry, RetryPolicy { max_attempts: 10, ..RetryPolicy::default() });
    assert_eq!(def.description, None);
}

#[test]
fn several_documents_give_several_definitions() {
    let text = doc(VALID) + "---\n" + &doc(VALID).replace("version: 1", "version: 2") + "---\n";
    let defs = parse_definitions(&text).unwrap_or_else(|p| panic!("{}", format_problems("multi", &p)));
    assert_eq!(defs.iter().map(|d| (d.name.as_str(), d.version)).collect::<Vec<_>>(), vec![("s", 1), ("s", 2)]);
}

#[test]
fn several_documents_report_problems_of_each_and_repeated_versions() {
    let text = doc(VALID) + "---\n" + &doc(VALID).replace("deadline: 1m", "deadline: soon");
    let text = text + "---\n" + &doc(VALID);
    let Err(found) = parse_definitions(&text) else {
        panic!("expected problems");
    };
    let got: Vec<String> = found.iter().map(Problem::to_string).collect();
    assert_eq!(
        got,
        vec![
            "17:11: deadline: bad duration `soon`: \
             expected a number followed by ms, s, m, h or d (e.g. `500ms`, `30s`, `1m30s`)"
                .to_string(),
            "29:1: saga `s` version 1 is already defined on line 1".to_string(),
        ]
    );
}

#[test]
fn documents_before_a_syntax_error_are_still_checked() {
    let text = doc(VALID).replace("version: 1", "version: x") + "---\nname: [\n";
    let got: Vec<String> = match parse_definitions(&text) {
        Ok(_) => Vec::new(),
        Err(found) => found.iter().map(Problem::to_string).collect(),
    };
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].starts_with("2:10: version: expected an integer"), "{got:#?}");
    assert!(got[1].contains("YAML syntax error"), "{got:#?}");
}

#[test]
fn deep_nesting_is_refused_without_overflowing() {
    let text = "[".repeat(100_000);
    let got = problems(&text);
    assert_eq!(got.len(), 1, "{got:#?}");
}

// ---------------------------------------------------------------------------
// The shipped example and its graph.

#[test]
fn the_order_example_parses() {
    let def = parse_definition(&read("examples/order/create_order.yaml"))
        .unwrap_or_else(|p| panic!("{}", format_problems("examples/order/create_order.yaml", &p)));
    assert_eq!((def.name.as_str(), def.version), ("create_order", 1));
    assert_eq!(def.deadline, Duration::from_secs(120));
    let shape: Vec<(&str, &str, &str, Option<&str>, &str)> = def
        .steps
        .iter()
        .map(|s| {
            (s.name.as_str(), s.service.as_str(), s.action.as_str(), s.compensation.as_deref(), s.contract.as_str())
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("reserve_stock", "inventory", "inventory.reserve", Some("inventory.release"), "inventory/v1"),
            ("charge_payment", "payment", "payment.charge", Some("payment.refund"), "payment/v1"),
            ("send_confirmation", "notification", "notification.send", None, "notification/v1"),
        ]
    );
    for step in &def.steps {
        assert_eq!(step.timeout, Duration::from_secs(10), "{}", step.name);
        // Short backoffs keep the demo fast.
        assert_eq!(step.retry.initial_backoff, Duration::from_millis(50), "{}", step.name);
        assert_eq!(step.retry.max_backoff, Duration::from_secs(2), "{}", step.name);
    }
    assert_eq!(def.steps[2].retry.max_attempts, 8);
}

#[test]
fn the_order_graph_has_the_expected_edges() {
    let def = parse_definition(&read("examples/order/create_order.yaml"))
        .unwrap_or_else(|p| panic!("{}", format_problems("create_order.yaml", &p)));
    let graph = mermaid(&def);
    assert!(graph.starts_with("flowchart LR\n"), "{graph}");
    for edge in [
        "saga_start --> step0",
        "step0 -- ok --> step1",
        "step1 -- ok --> step2",
        "step2 -- ok --> saga_completed",
        "step0 -- failed --> saga_compensated",
        "step1 -- failed --> comp0",
        "step2 -- failed --> comp1",
        "step0 -. timeout .-> comp0",
        "step1 -. timeout .-> comp1",
        "comp1 --> comp0",
        "comp0 --> saga_compensated",
        "comp1 -. exhausted .-> needs_operator",
        "step2[\"send_confirmation<br/>notification: notification.send\"]",
        "comp1[\"undo charge_payment<br/>payment: payment.refund\"]",
    ] {
        assert!(graph.lines().any(|l| l.trim() == edge), "missing `{edge}` in\n{graph}");
    }
    // send_confirmation cannot be undone: no compensation node, no timeout edge.
    assert!(!graph.contains("comp2"), "{graph}");
    // Node ids must be plain identifiers for Mermaid.
    for l in graph.lines().skip(1).map(str::trim) {
        if l.starts_with("%%") || l.starts_with("class") {
            continue;
        }
        let id: String = l.chars().take_while(|c| !matches!(c, '[' | '(' | ' ')).collect();
        assert!(!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad node id in `{l}`");
    }
}

// ---------------------------------------------------------------------------
// The JSON Schema documents the same format the parser reads.

fn keys(value: &serde_json::Value, pointer: &str) -> BTreeSet<String> {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_object)
        .unwrap_or_else(|| panic!("schema has no object at {pointer}"))
        .keys()
        .cloned()
        .collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn strings(value: &serde_json::Value, pointer: &str) -> BTreeSet<String> {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_array)
        .unwrap_or_else(|| panic!("schema has no array at {pointer}"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_schema_lists_the_keys_the_parser_accepts() {
    let schema: serde_json::Value =
        serde_json::from_str(&read("schema/saga-definition.schema.json")).unwrap_or_else(|e| panic!("schema: {e}"));
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(keys(&schema, "/properties"), set(SAGA_KEYS), "saga keys");
    assert_eq!(keys(&schema, "/$defs/step/properties"), set(STEP_KEYS), "step keys");
    assert_eq!(keys(&schema, "/$defs/retryPolicy/properties"), set(RETRY_KEYS), "retry keys");
    assert_eq!(keys(&schema, "/$defs/defaults/properties"), set(DEFAULTS_KEYS), "defaults keys");
    for object in ["", "/$defs/step", "/$defs/retryPolicy", "/$defs/defaults"] {
        assert_eq!(
            schema.pointer(&format!("{object}/additionalProperties")),
            Some(&serde_json::Value::Bool(false)),
            "{object} must reject unknown keys, as the parser does"
        );
    }
    // Required keys: the parser reports exactly these as missing.
    assert_eq!(strings(&schema, "/required"), set(&["name", "version", "deadline", "steps"]));
    assert_eq!(strings(&schema, "/$defs/step/required"), set(&["name", "service", "action", "contract"]));
    let Err(found) = parse_definition("description: nothing else\n") else {
        panic!("expected problems");
    };
    let missing: BTreeSet<String> = found
        .iter()
        .filter_map(|p| p.message.strip_prefix("missing required key `"))
        .map(|rest| rest.trim_end_matches('`').to_string())
        .collect();
    assert_eq!(missing, strings(&schema, "/required"));
    let Err(found) = parse_definition("name: s\nversion: 1\ndeadline: 1m\nsteps:\n  - {}\n") else {
        panic!("expected problems");
    };
    let missing: BTreeSet<String> = found
        .iter()
        .filter_map(|p| p.message.strip_prefix("steps[0]: missing required key `"))
        .map(|rest| rest.trim_end_matches('`').to_string())
        .collect();
    assert_eq!(missing, strings(&schema, "/$defs/step/required"));
}

/// `input` is a JSON Schema written in YAML: it becomes JSON as written,
/// scalars typed by the YAML core schema.
#[test]
fn the_input_schema_becomes_json() {
    let yaml = insert(
        4,
        &["input:", "  type: object", "  required: [qty]", "  properties:", "    qty: { type: integer, minimum: 1 }"],
    );
    let def = parse_definition(&yaml).unwrap();
    let expected = serde_json::json!({
        "type": "object",
        "required": ["qty"],
        "properties": { "qty": { "type": "integer", "minimum": 1 } }
    });
    assert_eq!(def.input_schema, Some(expected));
    assert_eq!(parse_definition(&doc(VALID)).unwrap().input_schema, None);
}
