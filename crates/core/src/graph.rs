//! Saga definitions drawn as Mermaid flowcharts (`sqsaga graph`).
//!
//! This module owns only the drawing: it reads a [`SagaDefinition`] that was
//! already validated and knows nothing of YAML or of the state machine's
//! internals beyond the shape of a saga: forward on success, backward through
//! the compensations on failure.

use serde::Serialize;

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
    let g = graph(def);
    for n in &g.nodes {
        let lines: Vec<&str> = n.label.iter().map(String::as_str).collect();
        let text = label(&lines);
        line(match n.kind {
            NodeKind::Step | NodeKind::Compensation => format!("{}[\"{text}\"]", n.id),
            NodeKind::NeedsOperator => format!("{}([\"{text}\"])", n.id),
            NodeKind::Start | NodeKind::Completed | NodeKind::Compensated => format!("{}((\"{text}\"))", n.id),
        });
    }
    for e in &g.edges {
        line(match (&e.label, e.dotted) {
            (None, _) => format!("{} --> {}", e.from, e.to),
            (Some(l), false) => format!("{} -- {l} --> {}", e.from, e.to),
            (Some(l), true) => format!("{} -. {l} .-> {}", e.from, e.to),
        });
    }
    let compensations: Vec<&str> =
        g.nodes.iter().filter(|n| n.kind == NodeKind::Compensation).map(|n| n.id.as_str()).collect();
    line("classDef compensation fill:#fdecea,stroke:#c0392b".to_string());
    line("classDef terminal fill:#eef,stroke:#557".to_string());
    if !compensations.is_empty() {
        line(format!("class {} compensation", compensations.join(",")));
        line("class saga_start,saga_completed,saga_compensated,needs_operator terminal".to_string());
    } else {
        line("class saga_start,saga_completed,saga_compensated terminal".to_string());
    }
    out
}

/// What a node of [`Graph`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Start,
    /// A step's action.
    Step,
    /// A step's compensation.
    Compensation,
    Completed,
    Compensated,
    NeedsOperator,
}

/// One node: `saga_start`, `stepN`, `compN`, `saga_completed`,
/// `saga_compensated`, `needs_operator`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: String,
    pub kind: NodeKind,
    /// The step's index, for step and compensation nodes.
    pub step: Option<usize>,
    /// Label lines (name, then `service: command`).
    pub label: Vec<String>,
}

/// One edge; `label` is `ok`, `failed`, `timeout` or `exhausted` (none:
/// unconditional), `dotted` when it is taken only in doubt or exhaustion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub label: Option<String>,
    pub dotted: bool,
}

/// The saga as nodes and edges, the shape [`mermaid`] draws (and the admin
/// API serves, for pages that draw it themselves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// Nodes and edges of `def`, by the rules [`mermaid`] documents.
pub fn graph(def: &SagaDefinition) -> Graph {
    let node = |id: String, kind: NodeKind, step: Option<usize>, label: &[&str]| Node {
        id,
        kind,
        step,
        label: label.iter().map(|l| l.to_string()).collect(),
    };
    let edge = |from: &str, to: &str, label: Option<&str>, dotted: bool| Edge {
        from: from.to_string(),
        to: to.to_string(),
        label: label.map(str::to_string),
        dotted,
    };
    let compensable: Vec<usize> = (0..def.steps.len()).filter(|&i| def.steps[i].compensation.is_some()).collect();
    let mut nodes = vec![node("saga_start".into(), NodeKind::Start, None, &["start"])];
    for (i, step) in def.steps.iter().enumerate() {
        nodes.push(node(
            format!("step{i}"),
            NodeKind::Step,
            Some(i),
            &[&step.name, &format!("{}: {}", step.service, step.action)],
        ));
    }
    nodes.push(node("saga_completed".into(), NodeKind::Completed, None, &["completed"]));
    for &i in &compensable {
        let step = &def.steps[i];
        let command = step.compensation.as_deref().unwrap_or_default();
        nodes.push(node(
            format!("comp{i}"),
            NodeKind::Compensation,
            Some(i),
            &[&format!("undo {}", step.name), &format!("{}: {}", step.service, command)],
        ));
    }
    nodes.push(node("saga_compensated".into(), NodeKind::Compensated, None, &["compensated"]));
    if !compensable.is_empty() {
        nodes.push(node("needs_operator".into(), NodeKind::NeedsOperator, None, &["needs operator"]));
    }

    let mut edges = Vec::new();
    // Forward path.
    if !def.steps.is_empty() {
        edges.push(edge("saga_start", "step0", None, false));
    }
    for i in 0..def.steps.len() {
        let next = if i + 1 < def.steps.len() { format!("step{}", i + 1) } else { "saga_completed".to_string() };
        edges.push(edge(&format!("step{i}"), &next, Some("ok"), false));
    }
    // Where compensation starts when everything before step `i` must be undone.
    let undo_before = |i: usize| match compensable.iter().rev().find(|&&c| c < i) {
        Some(c) => format!("comp{c}"),
        None => "saga_compensated".to_string(),
    };
    for (i, step) in def.steps.iter().enumerate() {
        edges.push(edge(&format!("step{i}"), &undo_before(i), Some("failed"), false));
        if step.compensation.is_some() {
            edges.push(edge(&format!("step{i}"), &format!("comp{i}"), Some("timeout"), true));
        }
    }
    // Backward path.
    for &i in compensable.iter().rev() {
        edges.push(edge(&format!("comp{i}"), &undo_before(i), None, false));
    }
    for &i in &compensable {
        edges.push(edge(&format!("comp{i}"), "needs_operator", Some("exhausted"), true));
    }
    Graph { nodes, edges }
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
