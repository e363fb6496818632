//! The saga definition parser and validator (`crates/core/src/yaml.rs` on
//! the marked YAML tree) on arbitrary text, as `sqsaga validate` and the
//! orchestrator's start read definition files.
//!
//! Properties: no panic; a refusal lists problems at real `line:col`
//! positions of the text, in text order, each naming its cause; an accepted
//! definition holds the validator's rules (at least one step, unique step
//! names, no compensable step after one without compensation, sane retry
//! policies, timeouts under the deadline) and, written back as YAML with
//! every setting explicit, parses to the same definition.
#![no_main]

use std::collections::BTreeSet;
use std::fmt::Write;

use libfuzzer_sys::fuzz_target;
use sqsaga_core::definition::{RetryPolicy, SagaDefinition};
use sqsaga_core::duration::format_duration;
use sqsaga_core::yaml::{Problem, format_problems, parse_definition, parse_definitions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_definitions(text) {
        Ok(definitions) => {
            assert!(!definitions.is_empty(), "accepted a text without definitions");
            for definition in &definitions {
                holds_the_rules(definition);
                let written = to_yaml(definition);
                match parse_definition(&written) {
                    Ok(again) => assert_eq!(&again, definition, "parse(write(x)) != x; written:\n{written}"),
                    Err(problems) => {
                        panic!("written back, it is refused:\n{written}\n{}", format_problems("written", &problems))
                    }
                }
                let _ = sqsaga_core::graph::mermaid(definition);
            }
            if let [one] = definitions.as_slice() {
                assert_eq!(parse_definition(text).as_ref(), Ok(one), "one definition, read as the only one");
            }
        }
        Err(problems) => well_placed(text, &problems),
    }
    if let Err(problems) = parse_definition(text) {
        well_placed(text, &problems);
    }
});

/// Problems point into the text, in order, and say something.
fn well_placed(text: &str, problems: &[Problem]) {
    assert!(!problems.is_empty(), "a refusal without a problem");
    let lines = yaml_lines(text);
    for p in problems {
        assert!(p.line >= 1 && p.col >= 1, "position {}:{} of {p:?}", p.line, p.col);
        assert!(p.line <= lines + 1, "line {} past the end ({lines} lines): {p:?}", p.line);
        assert!(p.message.len() > 10, "problem without a cause: {p:?}");
    }
    assert!(problems.windows(2).all(|w| (w[0].line, w[0].col) <= (w[1].line, w[1].col)), "not in text order");
    assert!(!format_problems("f.yaml", problems).is_empty());
}

fn holds_the_rules(d: &SagaDefinition) {
    assert!(!d.steps.is_empty() && d.version >= 1 && !d.deadline.is_zero(), "{d:?}");
    let names: BTreeSet<&str> = d.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), d.steps.len(), "duplicate step names in {d:?}");
    let first_final = d.steps.iter().position(|s| s.compensation.is_none()).unwrap_or(d.steps.len());
    assert!(d.steps[first_final..].iter().all(|s| s.compensation.is_none()), "compensable after final: {d:?}");
    for step in &d.steps {
        assert!(!step.timeout.is_zero() && step.timeout < d.deadline, "{step:?}");
        assert!(step.queue_timeout.is_none_or(|q| !q.is_zero() && q < d.deadline), "{step:?}");
        for retry in [&step.retry, &step.compensation_retry] {
            sane(retry);
            for attempt in 1..=retry.max_attempts.min(20) {
                assert!(retry.backoff(attempt, &step.name) <= retry.max_backoff, "{retry:?}");
            }
        }
    }
}

fn sane(r: &RetryPolicy) {
    assert!(r.max_attempts >= 1, "{r:?}");
    assert!(r.multiplier.is_finite() && r.multiplier >= 1.0, "{r:?}");
    assert!((0.0..=1.0).contains(&r.jitter), "{r:?}");
    assert!(r.initial_backoff <= r.max_backoff, "{r:?}");
}

/// The definition as YAML, every setting explicit, strings quoted (JSON
/// strings are YAML double-quoted scalars).
fn to_yaml(d: &SagaDefinition) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut out = String::new();
    let _ = writeln!(out, "name: {}", q(&d.name));
    let _ = writeln!(out, "version: {}", d.version);
    if let Some(description) = &d.description {
        let _ = writeln!(out, "description: {}", q(description));
    }
    let _ = writeln!(out, "deadline: {}", q(&format_duration(d.deadline)));
    if let Some(input) = &d.input_schema {
        let _ = writeln!(out, "input: {input}");
    }
    let _ = writeln!(out, "steps:");
    for s in &d.steps {
        let _ = writeln!(out, "  - name: {}", q(&s.name));
        let _ = writeln!(out, "    service: {}", q(&s.service));
        let _ = writeln!(out, "    action: {}", q(&s.action));
        if let Some(c) = &s.compensation {
            let _ = writeln!(out, "    compensation: {}", q(c));
        }
        let _ = writeln!(out, "    timeout: {}", q(&format_duration(s.timeout)));
        if let Some(t) = s.queue_timeout {
            let _ = writeln!(out, "    queueTimeout: {}", q(&format_duration(t)));
        }
        let _ = writeln!(out, "    contract: {}", q(&s.contract));
        for (key, r) in [("retry", &s.retry), ("compensationRetry", &s.compensation_retry)] {
            let _ = writeln!(
                out,
                "    {key}: {{ maxAttempts: {}, initialBackoff: {}, maxBackoff: {}, multiplier: {:?}, jitter: {:?} }}",
                r.max_attempts,
                q(&format_duration(r.initial_backoff)),
                q(&format_duration(r.max_backoff)),
                r.multiplier,
                r.jitter
            );
        }
    }
    out
}

/// Lines as YAML counts them: `\r\n`, `\r` and `\n` each end one.
fn yaml_lines(text: &str) -> usize {
    1 + text.replace("\r\n", "\n").chars().filter(|c| matches!(c, '\r' | '\n')).count()
}
