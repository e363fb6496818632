//! The conformance kit: `sqsaga conformance --service NAME` drives a running
//! participant — in any language, on either backend — through the wire
//! protocol's cases (docs/protocol.md, "Conformance") over the real queues,
//! playing the orchestrator: commands to the service's queue, replies on a
//! queue of its own, poison messages looked for on the service's DLQ. The
//! participant must implement the `conformance/v1` contract ([`contract`]),
//! whose counter makes every effect observable through replies.
//!
//! [`run`] takes the queue port and returns a [`Report`] (a pass/fail/skip
//! line per case); [`run_configured`] opens the backend the settings name,
//! as the orchestrator would. The binary only prints the table.
//!
//! Knows the queue port, the wire protocol and the runtime's backend
//! wiring; nothing of the participant under test but its queue.

use std::sync::Arc;
use std::time::Duration;

use sqsaga_config::Settings;
use sqsaga_protocol::Signing;
use sqsaga_queue::{Queue, QueueSpec};

mod cases;
pub mod contract;
mod driver;

pub use cases::Spoil;

/// The kit's reply queue: commands ask for their replies here.
pub const REPLY_QUEUE: &str = "conformance-replies";

/// The reply schema the replies are checked against.
const REPLY_SCHEMA: &str = include_str!("../../../schema/protocol/reply.schema.json");

/// Why the kit could not run at all (a failed case is in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("cannot open the backend: {0}")]
    Backend(#[from] sqsaga_runtime::RuntimeError),
    #[error("cannot create the queues of the run: {0}")]
    Queue(#[from] sqsaga_queue::QueueError),
    #[error("the reply schema does not compile: {0}")]
    Schema(String),
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct KitOptions {
    /// The participant's service: its queue is this name.
    pub service: String,
    /// The deployment's signing policy: commands are signed with it, and when
    /// it requires signatures, the forged/stale/missing signature cases run.
    pub signing: Option<Arc<Signing>>,
    /// How long one reply or dead letter may take.
    pub timeout: Duration,
    /// The spec of the service's queue (the kit creates it if missing).
    pub queue_spec: QueueSpec,
}

impl KitOptions {
    pub fn new(service: &str) -> KitOptions {
        KitOptions {
            service: service.to_string(),
            signing: None,
            timeout: Duration::from_secs(30),
            queue_spec: QueueSpec::named(service),
        }
    }
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub name: &'static str,
    pub verdict: Verdict,
    /// Wall time of the case.
    pub took: Duration,
}

/// Every case of a run, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub service: String,
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// Names of the failed cases.
    pub fn failed(&self) -> Vec<&'static str> {
        self.cases.iter().filter(|c| matches!(c.verdict, Verdict::Fail(_))).map(|c| c.name).collect()
    }

    pub fn passed(&self) -> bool {
        self.failed().is_empty()
    }

    /// The pass/fail table, one case a line, then a summary line.
    pub fn table(&self) -> String {
        let width = self.cases.iter().map(|c| c.name.len()).max().unwrap_or(4).max(4);
        let mut out = format!("conformance/v1 against service `{}`\n", self.service);
        out.push_str(&format!("{:<width$}  result  time    detail\n", "case"));
        for c in &self.cases {
            let (result, detail) = match &c.verdict {
                Verdict::Pass => ("pass", ""),
                Verdict::Fail(why) => ("FAIL", why.as_str()),
                Verdict::Skip(why) => ("skip", why.as_str()),
            };
            let ms = c.took.as_millis();
            out.push_str(format!("{:<width$}  {result:<6}  {:>5}ms  {detail}", c.name, ms).trim_end());
            out.push('\n');
        }
        let count = |f: fn(&Verdict) -> bool| self.cases.iter().filter(|c| f(&c.verdict)).count();
        out.push_str(&format!(
            "{} passed, {} failed, {} skipped\n",
            count(|v| *v == Verdict::Pass),
            count(|v| matches!(v, Verdict::Fail(_))),
            count(|v| matches!(v, Verdict::Skip(_)))
        ));
        out
    }
}

/// The case names, in the order they run.
pub const CASES: &[&str] = &[
    "reply shape and routing",
    "trace context propagated",
    "duplicate command",
    "compensation",
    "compensation before action",
    "late action after compensation",
    "fence",
    "refusal",
    "retries (transient failure)",
    "expired action",
    "poison: unparseable body",
    "poison: unknown command",
    "poison: unknown protocol version",
    "keeps running after poison",
    "signature: forged",
    "signature: stale",
    "signature: missing",
];

/// Runs every case against the participant of `options.service` on `queue`.
pub async fn run(queue: Arc<dyn Queue>, options: &KitOptions) -> Result<Report, ConformanceError> {
    let schema_value: serde_json::Value =
        serde_json::from_str(REPLY_SCHEMA).map_err(|e| ConformanceError::Schema(e.to_string()))?;
    let schema = jsonschema::validator_for(&schema_value).map_err(|e| ConformanceError::Schema(e.to_string()))?;
    queue.ensure(&options.queue_spec).await?;
    queue.ensure(&QueueSpec { with_dlq: false, max_receive_count: 0, ..QueueSpec::named(REPLY_QUEUE) }).await?;
    let mut d = driver::Driver::new(queue, &options.service, REPLY_QUEUE, options.signing.clone(), options.timeout);
    let signatures_required = options.signing.as_ref().is_some_and(|s| s.require);
    let mut report = Report { service: options.service.clone(), cases: Vec::new() };
    // Why the participant is taken to have stopped answering: every case
    // after that fails at once instead of waiting out its own timeout.
    let mut silent: Option<String> = None;
    for &name in CASES {
        let started = std::time::Instant::now();
        if let Some(why) = &silent {
            let verdict = Verdict::Fail(format!("not run: the participant stopped answering ({why})"));
            report.cases.push(CaseResult { name, verdict, took: Duration::ZERO });
            continue;
        }
        let spoil = match name {
            "signature: forged" => Some(Spoil::Forged),
            "signature: stale" => Some(Spoil::Stale),
            "signature: missing" => Some(Spoil::Missing),
            _ => None,
        };
        let result = match (name, spoil) {
            (_, Some(_)) if !signatures_required => {
                let why = "signing not required here: set SQSAGA_SIGNING_KEY and SQSAGA_REQUIRE_SIGNATURE=true as the participant has them";
                report.cases.push(CaseResult { name, verdict: Verdict::Skip(why.into()), took: Duration::ZERO });
                continue;
            }
            (_, Some(spoil)) => cases::bad_signature(&mut d, spoil).await,
            ("reply shape and routing", _) => cases::reply_shape(&mut d, &schema).await,
            ("trace context propagated", _) => cases::trace_context(&mut d).await,
            ("duplicate command", _) => cases::duplicate(&mut d).await,
            ("compensation", _) => cases::compensation(&mut d).await,
            ("compensation before action", _) => cases::null_compensation(&mut d).await,
            ("late action after compensation", _) => cases::late_action(&mut d).await,
            ("fence", _) => cases::fence(&mut d).await,
            ("refusal", _) => cases::refusal(&mut d).await,
            ("retries (transient failure)", _) => cases::retries(&mut d).await,
            ("expired action", _) => cases::expired(&mut d).await,
            ("poison: unparseable body", _) => cases::poison_unparseable(&mut d).await,
            ("poison: unknown command", _) => cases::poison_unknown_command(&mut d).await,
            ("poison: unknown protocol version", _) => cases::poison_unknown_version(&mut d).await,
            ("keeps running after poison", _) => cases::keeps_running(&mut d).await,
            (other, None) => Err(format!("no such case `{other}`")),
        };
        let verdict = match result {
            Ok(()) => Verdict::Pass,
            Err(why) => Verdict::Fail(why),
        };
        report.cases.push(CaseResult { name, verdict, took: started.elapsed() });
        if d.take_timed_out()
            && let Err(why) = cases::answers(&mut d).await
        {
            silent = Some(why);
        }
    }
    Ok(report)
}

/// [`run`] on the backend `settings` name (the embedded one through the same
/// data dir as the orchestrator, or SQS), signing as the deployment does.
pub async fn run_configured(settings: &Settings, service: &str, timeout: Duration) -> Result<Report, ConformanceError> {
    let opened = sqsaga_runtime::open_backend(settings).await?;
    let options = KitOptions {
        signing: sqsaga_runtime::signing(settings),
        timeout,
        queue_spec: sqsaga_runtime::queue_spec(settings, service),
        ..KitOptions::new(service)
    };
    run(opened.queue, &options).await
}
