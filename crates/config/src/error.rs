//! Configuration errors: every problem found, each naming the variable, key
//! or flag and where it came from, so one start-up reports them all.

use std::fmt;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where the bad value is, as an operator would search for it:
    /// ``SQSAGA_CONCURRENCY=abc``, ``/etc/order/config.json: `wait_time` = "30s"``,
    /// ``--data-dir=x``, or just the file path. Secret values appear as `<redacted>`.
    pub location: String,
    /// The canonical key the problem is about, when there is one; lets tools
    /// (and tests) match problems without parsing the message.
    pub key: Option<String>,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found while resolving the configuration, in a stable order:
/// unknown names first, then settings in table order, then cross-checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    /// The problems about `key`.
    pub fn for_key<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a ConfigProblem> + 'a {
        self.0.iter().filter(move |p| p.key.as_deref() == Some(key))
    }
}

fn lines(problems: &[ConfigProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}
