//! Position-marked YAML: the one layer every YAML reader of the project
//! (saga definitions in `yaml.rs`, the drift guard's `fleet.yaml`) builds
//! on, so each reports its problems as `line:col` the same way.
//!
//! [`parse_documents`] turns yaml-rust2's parser events into a small tree
//! of [`Node`]s that remember where they start; readers then walk the tree,
//! collecting every [`Problem`] instead of stopping at the first. What a
//! document means is the reader's business: this module only knows YAML.
//!
//! Why not a marked-YAML crate: `marked-yaml` (0.8) reads one document,
//! stops at the first error, refuses tags (so `!!str`) and keeps the last of
//! duplicate keys unless told to fail on the first; saphyr's `MarkedYaml`
//! keeps mappings in a hash map, so a duplicate key is gone before a reader
//! can point at both. Saga files hold several documents and `sqsaga
//! validate` shows every problem at once, so the tree is built here, on
//! yaml-rust2's event parser (the maintained part), in 150 lines.

use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One thing wrong with a YAML text, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for Problem {}

impl Problem {
    /// A problem at `line:col` (both 1-based).
    pub fn new(line: usize, col: usize, message: impl Into<String>) -> Problem {
        Problem { line, col, message: message.into() }
    }

    /// A problem at `pos`.
    pub fn at(pos: Pos, message: impl Into<String>) -> Problem {
        Problem::new(pos.line, pos.col, message)
    }
}

/// Formats problems as `file:line:col: message`, one per line.
pub fn format_problems(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push_str(&format!("{file}:{p}\n"));
    }
    out
}

/// A 1-based position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<&Marker> for Pos {
    fn from(m: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Pos { line: m.line().max(1), col: m.col() + 1 }
    }
}

/// A YAML node and where it starts.
#[derive(Debug)]
pub struct Node {
    /// Where a reader looks: the first key of a block mapping, the key of an
    /// empty value (`timeout:`), the first character otherwise.
    pub pos: Pos,
    pub value: Value,
}

/// What a node holds. Scalars stay text: typing them is the reader's job.
#[derive(Debug)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in text order, duplicates kept, so a reader can name both.
    Map(Vec<(Node, Node)>),
    /// Something already reported while building the tree (an alias): the
    /// walker skips it silently instead of piling a second problem on it.
    Invalid,
}

/// A scalar's text and whether it can only be a string.
#[derive(Debug)]
pub struct Scalar {
    pub text: String,
    /// Quoted, block, or tagged `!!str`: a string whatever it looks like.
    pub forced_string: bool,
}

impl Node {
    /// A plain empty scalar, `~` or `null`: YAML's null.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s)
            if !s.forced_string && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A plain empty scalar: an empty document, or a key with no value.
    fn is_empty(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if !s.forced_string && s.text.is_empty())
    }
}

/// One complete document of a YAML stream.
#[derive(Debug)]
pub struct Document {
    /// Where the document starts (its `---`, or its first node).
    pub start: Pos,
    pub root: Node,
}

/// How [`parse_documents`] reads a text.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Nesting deeper than this is a problem and ends the parse: the limit
    /// keeps hostile input from building a tree whose drop would overflow
    /// the stack. Pick it well above what a valid document needs.
    pub max_depth: usize,
    /// What the text holds, for messages (`saga definitions`, `fleet.yaml`).
    pub what: &'static str,
}

enum Frame {
    Seq { pos: Pos, items: Vec<Node> },
    Map { pos: Pos, entries: Vec<(Node, Node)>, key: Option<Node> },
}

/// Runs the parser to the end of the text or to the first syntax error,
/// returning every complete, non-empty document. Documents that end before
/// a syntax error are still returned, so their problems can be reported
/// along with it. Aliases are refused (each a problem, the node
/// [`Value::Invalid`]): a value written out is a value a reader can point at.
pub fn parse_documents(text: &str, options: Options) -> (Vec<Document>, Vec<Problem>) {
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut start = Pos { line: 1, col: 1 };
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(pair) => pair,
            Err(e) => {
                problems.push(Problem::at(Pos::from(e.marker()), format!("YAML syntax error: {}", e.info())));
                break;
            }
        };
        let pos = Pos::from(&marker);
        let complete = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart => None,
            Event::DocumentStart => {
                start = pos;
                None
            }
            Event::DocumentEnd => {
                if let Some(root) = root.take().filter(|n| !n.is_empty()) {
                    docs.push(Document { start, root });
                }
                None
            }
            Event::Alias(_) => {
                let what = options.what;
                problems.push(Problem::at(
                    pos,
                    format!("aliases (`*name`) are not supported in {what}; write the value out"),
                ));
                Some(Node { pos, value: Value::Invalid })
            }
            Event::Scalar(text, style, _anchor, tag) => {
                let tagged_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let forced_string = tagged_str || style != TScalarStyle::Plain;
                Some(Node { pos, value: Value::Scalar(Scalar { text, forced_string }) })
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= options.max_depth {
                    problems.push(Problem::at(pos, format!("nesting deeper than {} levels", options.max_depth)));
                    return (docs, problems);
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq { pos, items: Vec::new() }
                } else {
                    Frame::Map { pos, entries: Vec::new(), key: None }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { pos, items }) => Some(Node { pos, value: Value::Seq(items) }),
                Some(Frame::Map { pos, entries, .. }) => {
                    // A block mapping's start event points past its first key
                    // (at the `:`); the first key is where a reader looks.
                    let pos = entries.first().map_or(pos, |(k, _)| pos.min(k.pos));
                    Some(Node { pos, value: Value::Map(entries) })
                }
                None => None,
            },
        };
        if let Some(node) = complete {
            match stack.last_mut() {
                None => root = Some(node),
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map { entries, key, .. }) => match key.take() {
                    None => *key = Some(node),
                    Some(k) => {
                        let mut value = node;
                        // An empty value (`timeout:`) is marked at the start of
                        // the next line; point at its key instead.
                        if value.is_empty() {
                            value.pos = k.pos;
                        }
                        entries.push((k, value));
                    }
                },
            }
        }
    }
    (docs, problems)
}

/// The allowed key an unknown key was probably meant to be: same letters
/// ignoring case and `_`/`-` (`max_attempts`), a typo or two away (`jiter`),
/// or mostly the same start (`retries`, `timeoutMs`).
pub fn suggest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let fold = |s: &str| s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect::<String>();
    let folded = fold(key);
    allowed
        .iter()
        .filter_map(|a| {
            let other = fold(a);
            let distance = strsim::levenshtein(&folded, &other);
            let shorter = folded.chars().count().min(other.chars().count());
            let common = folded.chars().zip(other.chars()).take_while(|(x, y)| x == y).count();
            let close = distance <= 2.min(folded.chars().count().max(other.chars().count()) / 3);
            let same_start = common >= 4 && common * 3 >= shorter * 2;
            (close || same_start).then_some((distance, *a))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: Options = Options { max_depth: 8, what: "tests" };

    #[test]
    fn suggests_close_keys_only() {
        const RETRY: &[&str] = &["maxAttempts", "initialBackoff", "maxBackoff", "multiplier", "jitter"];
        const STEP: &[&str] = &["name", "service", "action", "compensation", "timeout", "retry"];
        assert_eq!(suggest("max_attempts", RETRY), Some("maxAttempts"));
        assert_eq!(suggest("jiter", RETRY), Some("jitter"));
        assert_eq!(suggest("compensaton", STEP), Some("compensation"));
        assert_eq!(suggest("retries", STEP), Some("retry"));
        assert_eq!(suggest("timeoutMs", STEP), Some("timeout"));
        assert_eq!(suggest("colour", STEP), None);
        assert_eq!(suggest("max", RETRY), None);
    }

    #[test]
    fn documents_nodes_and_problems_are_marked() {
        let (docs, problems) = parse_documents("a: 1\nb:\n---\n- &x 1\n- *x\n", OPTIONS);
        assert_eq!(
            problems,
            vec![Problem::new(5, 3, "aliases (`*name`) are not supported in tests; write the value out")]
        );
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[1].start, docs[1].root.pos), (Pos { line: 3, col: 1 }, Pos { line: 4, col: 1 }));
        let Value::Map(entries) = &docs[0].root.value else { panic!("{:?}", docs[0]) };
        assert_eq!(entries[1].1.pos, Pos { line: 2, col: 1 }, "an empty value points at its key");
        assert!(entries[1].1.is_null());
        let (_, problems) = parse_documents("[[[[[[[[[1]]]]]]]]]", OPTIONS);
        assert_eq!(problems[0].message, "nesting deeper than 8 levels");
    }
}
