//! The runtime's errors. A configuration problem (exit code 2, before any
//! queue is touched) is told apart from everything else (exit code 1), and
//! every variant names its cause.

use std::path::PathBuf;

/// Why a process could not be set up or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Every problem found in the configuration, each naming its variable or key.
    #[error("invalid configuration ({} problem(s)):\n{}", .0.len(), indent(.0))]
    Config(Vec<String>),
    /// The HTTP port could not be opened.
    #[error(
        "cannot listen on {addr} (set SQSAGA_HTTP_ADDR, `http_addr` in the config file, or 127.0.0.1:0 for a free port): {source}"
    )]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    /// The admin API's own address could not be opened.
    #[error("cannot listen on {addr} (set SQSAGA_ADMIN_ADDR or `admin_addr` in the config file): {source}")]
    ListenAdmin { addr: std::net::SocketAddr, source: std::io::Error },
    /// A file or directory the process needs.
    #[error("{what} {}: {source}", path.display())]
    File { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("saga definitions: {0}")]
    Definitions(String),
    #[error("participant: {0}")]
    Participant(String),
    #[error(transparent)]
    Queue(#[from] sqsaga_queue::QueueError),
    #[error(transparent)]
    Store(#[from] sqsaga_store::StoreError),
    #[error("AWS backend: {0}")]
    Aws(#[from] sqsaga_aws::AwsError),
    #[error(transparent)]
    Http(#[from] sqsaga_http::HttpError),
    #[error(transparent)]
    Worker(#[from] sqsaga_worker::WorkerError),
    #[error("embedded backend: {0}")]
    Sqlite(#[from] sqsaga_sqlite::SqliteError),
    #[error("embedded backend: {0}")]
    Embedded(#[from] sqsaga_embedded::EmbeddedError),
    #[error(transparent)]
    SqsEndpoint(#[from] sqsaga_sqs_endpoint::EndpointError),
}

impl RuntimeError {
    /// One configuration problem.
    pub fn config(problem: impl Into<String>) -> RuntimeError {
        RuntimeError::Config(vec![problem.into()])
    }

    /// The process exit code: 2 for configuration problems, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RuntimeError::Config(_) => 2,
            _ => 1,
        }
    }
}

impl From<sqsaga_config::ConfigErrors> for RuntimeError {
    fn from(errors: sqsaga_config::ConfigErrors) -> Self {
        RuntimeError::Config(errors.0.iter().map(ToString::to_string).collect())
    }
}

impl From<sqsaga_orchestrator::DefinitionError> for RuntimeError {
    fn from(e: sqsaga_orchestrator::DefinitionError) -> Self {
        RuntimeError::Definitions(e.to_string())
    }
}

fn indent(problems: &[String]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}
