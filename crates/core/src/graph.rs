//! Saga definitions drawn as Mermaid flowcharts (`sqsaga graph`).
//!
//! This module owns only the drawing: it reads a [`SagaDefinition`] that was
//! already validated and knows nothing of YAML or of the state machine's
//! internals beyond the shape of a saga: forward on success, backward through
//! the compensations on failure.

use crate::definition::SagaDefinition;

/// A Mermaid `flowchart LR` of the saga.
///
/// - `saga_start` leads to the first step; each step's action node (`stepN`)
///   leads to the next with an `ok` edge, the last one to `saga_completed`.
/// - A step that fails (after its retries) leads with a `failed` edge to the
///   compensation of the nearest earlier compensable step, or straight to
///   `saga_compensated` when there is none.
/// - A step with a compensation also has a dotted `timeout` edge to its own
///   compensation (`compN`): after a timeout the orchestrator cannot know
///   whether the action ran, so it undoes it too (the worker's barrier makes
///   that harmless when it did not).
/// - Compensations chain backwards to `saga_compensated`; one whose retries
///   run out leads (dotted) to `needs_operator`.
///
/// Node ids are `stepN`/`compN` by index, so any step name is safe; labels are
/// quoted and escaped.
///
/// For a two-step saga (`reserve_stock` then `charge_payment`, both
/// compensable) the output is:
///
/// ```text
/// flowchart LR
///     %% pay v1
///     saga_start(("start"))
///     step0["reserve_stock<br/>inventory: inventory.reserve"]
///     step1["charge_payment<br/>payment: payment.charge"]
///     saga_completed(("completed"))
///     comp0["undo reserve_stock<br/>inventory: inventory.release"]
///     comp1["undo charge_payment<br/>payment: payment.refund"]
///     saga_compensated(("compensated"))
///     needs_operator(["needs operator"])
///     saga_start --> step0
///     step0 -- ok --> step1
///     step1 -- ok --> saga_completed
///     step0 -- failed --> saga_compensated
///     step0 -. timeout .-> comp0
///     step1 -- failed --> comp0
///     step1 -. timeout .-> comp1
///     comp1 --> comp0
///     comp0 --> saga_compensated
///     comp0 -. exhausted .-> needs_operator
///     comp1 -. exhausted .-> needs_operator
///     classDef compensation fill:#fdecea,stroke:#c0392b
///     classDef terminal fill:#eef,stroke:#557
///     class comp0,comp1 compensation
///     class saga_start,saga_completed,saga_compensated,needs_operator terminal
/// ```
pub fn mermaid(def: &SagaDefinition) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut line = |text: String| {
        out.push_str("    ");
        out.push_str(&text);
        out.push('\n');
    };
    let title = match &def.description {
        Some(d) => format!("{} v{}: {}", def.name, def.version, d),
        None => format!("{} v{}", def.name, def.version),
    };
    // A comment runs to the end of the line, so only line breaks need care.
    line(format!("%% {}", title.replace(['\r', '\n'], " ")));

    let compensable: Vec<usize> = (0..def.steps.len()).filter(|&i| def.steps[i].compensation.is_some()).collect();

    line("saga_start((\"start\"))".to_string());
    for (i, step) in def.steps.iter().enumerate() {
        line(format!("step{i}[\"{}\"]", label(&[&step.name, &format!("{}: {}", step.service, step.action)])));
    }
    line("saga_completed((\"completed\"))".to_string());
    for &i in &compensable {
        let step = &def.steps[i];
        let command = step.compensation.as_deref().unwrap_or_default();
        line(format!(
            "comp{i}[\"{}\"]",
            label(&[&format!("undo {}", step.name), &format!("{}: {}", step.service, command)])
        ));
    }
    line("saga_compensated((\"compensated\"))".to_string());
    if !compensable.is_empty() {
        line("needs_operator([\"needs operator\"])".to_string());
    }

    // Forward path.
    if !def.steps.is_empty() {
        line("saga_start --> step0".to_string());
    }
    for i in 0..def.steps.len() {
        let next = if i + 1 < def.steps.len() { format!("step{}", i + 1) } else { "saga_completed".to_string() };
        line(format!("step{i} -- ok --> {next}"));
    }

    // Where compensation starts when everything before step `i` must be undone.
    let undo_before = |i: usize| match compensable.iter().rev().find(|&&c| c < i) {
        Some(c) => format!("comp{c}"),
        None => "saga_compensated".to_string(),
    };
    for (i, step) in def.steps.iter().enumerate() {
        line(format!("step{i} -- failed --> {}", undo_before(i)));
        if step.compensation.is_some() {
            line(format!("step{i} -. timeout .-> comp{i}"));
        }
    }

    // Backward path.
    for &i in compensable.iter().rev() {
        line(format!("comp{i} --> {}", undo_before(i)));
    }
    for &i in &compensable {
        line(format!("comp{i} -. exhausted .-> needs_operator"));
    }

    line("classDef compensation fill:#fdecea,stroke:#c0392b".to_string());
    line("classDef terminal fill:#eef,stroke:#557".to_string());
    if !compensable.is_empty() {
        let ids: Vec<String> = compensable.iter().map(|i| format!("comp{i}")).collect();
        line(format!("class {} compensation", ids.join(",")));
        line("class saga_start,saga_completed,saga_compensated,needs_operator terminal".to_string());
    } else {
        line("class saga_start,saga_completed,saga_compensated terminal".to_string());
    }
    out
}

/// Lines of a node label, escaped for a double-quoted Mermaid string.
fn label(lines: &[&str]) -> String {
    let mut out = String::new();
    for (n, text) in lines.iter().enumerate() {
        if n > 0 {
            out.push_str("<br/>");
        }
        for c in text.chars() {
            match c {
                // Mermaid's entity codes; `#` first so codes are not re-escaped.
                '#' => out.push_str("#35;"),
                '"' => out.push_str("#quot;"),
                '<' => out.push_str("#lt;"),
                '>' => out.push_str("#gt;"),
                '\n' | '\r' => out.push(' '),
                _ => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::definition::{RetryPolicy, StepDefinition};

    fn step(name: &str, service: &str, action: &str, compensation: Option<&str>) -> StepDefinition {
        StepDefinition {
            name: name.to_string(),
            service: service.to_string(),
            action: action.to_string(),
            compensation: compensation.map(str::to_string),
            timeout: Duration::from_secs(10),
            queue_timeout: None,
            retry: RetryPolicy::default(),
            compensation_retry: RetryPolicy::default(),
            contract: format!("{service}/v1"),
        }
    }

    /// The doc comment's example is the real output.
    #[test]
    fn two_step_saga_matches_the_documented_output() {
        let def = SagaDefinition {
            input_schema: None,
            name: "pay".to_string(),
            version: 1,
            description: None,
            deadline: Duration::from_secs(60),
            steps: vec![
                step("reserve_stock", "inventory", "inventory.reserve", Some("inventory.release")),
                step("charge_payment", "payment", "payment.charge", Some("payment.refund")),
            ],
        };
        let source = include_str!("graph.rs");
        let start = source.find("/// flowchart LR").unwrap_or(0);
        let end = start + source[start..].find("/// ```").unwrap_or(0);
        let documented: String =
            source[start..end].lines().map(|l| l.trim_start().trim_start_matches("/// ").to_string() + "\n").collect();
        assert_eq!(mermaid(&def), documented);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label(&["a \"b\" <c> #1"]), "a #quot;b#quot; #lt;c#gt; #35;1");
    }
}
