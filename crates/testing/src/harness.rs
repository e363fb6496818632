//! [`SagaTest`]: a time-skipping test environment for saga authors, in the
//! spirit of Temporal's test server and NServiceBus' testable sagas. It runs
//! the real orchestrator over the in-memory queue and store on a manual
//! clock, and lets a test play every participant:
//!
//! - script replies — [`SagaTest::succeed`], [`SagaTest::refuse`],
//!   [`SagaTest::fail`] (transient) — or lose a command
//!   ([`SagaTest::lose`]) so that only its timeout answers;
//! - or serve a service with its real handlers ([`SagaTest::serve`], any
//!   `Participant`, e.g. over [`crate::participant::MemoryDb`]);
//! - move time ([`SagaTest::advance`]): the clock jumps from one due timer
//!   to the next (retry backoff, step timeouts, the deadline), firing each
//!   at its time, so a test of a 2-minute deadline takes milliseconds and
//!   never sleeps;
//! - assert on a saga's status, state and history, and on the commands
//!   dispatched ([`SagaTest::dispatched`], [`SagaTest::pending`]).
//!
//! Every call returns once the system is quiet at the current time: every
//! message that can be handled now has been.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqsaga_core::Millis;
use sqsaga_core::clock::{Clock, ManualClock};
use sqsaga_core::machine::{Outcome, SagaInstance, SagaStatus};
use sqsaga_orchestrator::{
    Definitions, ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorError, OrchestratorOptions, ensure_queues,
};
use sqsaga_protocol::{Command, Envelope, ReplyMessage, StartSaga, WorkerInfo};
use sqsaga_queue::{MAX_BATCH, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage};
use sqsaga_store::{HistoryEntry, SagaStore, StoreError};
use sqsaga_worker::{AnyParticipant, Worker, WorkerOptions};

use crate::queue::MemoryQueue;
use crate::store::MemoryStore;

/// Where the harness clock starts: a fixed instant, so runs repeat.
pub const START: Millis = 1_767_225_600_000;

/// How long a received message stays invisible: longer than any test
/// advances between a receive and its handling (which is never).
const VISIBILITY: Duration = Duration::from_secs(30);

/// Rounds of handling at one instant before the harness gives up (a saga
/// that keeps emitting at the same time is a bug in the test or the saga).
const MAX_ROUNDS: usize = 10_000;

/// Errors of the harness: each names what the test asked for.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("saga definition: {0}")]
    Definition(String),
    #[error("no pending command `{command}` on queue `{service}` (pending there: {pending:?})")]
    NoSuchCommand { service: String, command: String, pending: Vec<String> },
    #[error("no service runs command `{0}` in the loaded definitions")]
    UnknownCommand(String),
    #[error("the system did not settle within {0} rounds at one instant")]
    Unsettled(usize),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
}

/// The test environment. See the module documentation.
pub struct SagaTest {
    clock: Arc<ManualClock>,
    queue: Arc<MemoryQueue>,
    store: Arc<MemoryStore>,
    defs: Arc<Definitions>,
    orchestrator: Orchestrator,
    /// Services answered by their real handlers.
    workers: BTreeMap<String, Worker>,
}

impl SagaTest {
    /// An environment running the definitions in `yaml` (one definition).
    pub async fn new(yaml: &str) -> Result<SagaTest, HarnessError> {
        let def = sqsaga_core::yaml::parse_definition(yaml)
            .map_err(|p| HarnessError::Definition(sqsaga_core::yaml::format_problems("definition", &p)))?;
        let mut defs = Definitions::default();
        defs.insert(def, "test definition").map_err(|e| HarnessError::Definition(e.to_string()))?;
        SagaTest::with_definitions(defs).await
    }

    /// An environment running `defs`, with no admission limit.
    pub async fn with_definitions(defs: Definitions) -> Result<SagaTest, HarnessError> {
        SagaTest::configured(defs, OrchestratorOptions { max_in_flight: None, ..Default::default() }).await
    }

    /// An environment running `defs` with an orchestrator tuned by
    /// `options` (an admission limit, say); its queue and visibility are
    /// the harness's.
    pub async fn configured(defs: Definitions, options: OrchestratorOptions) -> Result<SagaTest, HarnessError> {
        let clock = Arc::new(ManualClock::at(START));
        let queue = Arc::new(MemoryQueue::new(clock.clone(), 0));
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let defs = Arc::new(defs);
        let template = QueueSpec { visibility_timeout: VISIBILITY, max_receive_count: 0, ..QueueSpec::named("t") };
        ensure_queues(queue.as_ref(), &defs, &template).await?;
        let options = OrchestratorOptions { visibility: VISIBILITY, queue: ORCHESTRATOR_QUEUE.to_string(), ..options };
        let orchestrator = Orchestrator::new(defs.clone(), queue.clone(), store.clone(), clock.clone(), options);
        Ok(SagaTest { clock, queue, store, defs, orchestrator, workers: BTreeMap::new() })
    }

    /// Serves `service` with `participant`'s real handlers from now on
    /// (its commands are run, replied to and deleted as a worker does).
    pub async fn serve(&mut self, service: &str, participant: Arc<dyn AnyParticipant>) -> Result<(), HarnessError> {
        let mut options = WorkerOptions::new(service, &format!("{service}-harness"));
        options.visibility = VISIBILITY;
        options.clock = self.clock.clone();
        let worker = Worker::new(options, self.queue.clone(), participant);
        self.workers.insert(service.to_string(), worker);
        self.settle().await
    }

    /// Requests saga `saga` (the newest loaded version) with id `id`.
    pub async fn start(&mut self, id: &str, saga: &str, input: Value) -> Result<(), HarnessError> {
        self.start_many(saga, &[(id.to_string(), input)]).await
    }

    /// Requests many sagas of `saga` at once, `(id, input)` each.
    pub async fn start_many(&mut self, saga: &str, sagas: &[(String, Value)]) -> Result<(), HarnessError> {
        let now = self.clock.now();
        for chunk in sagas.chunks(MAX_BATCH) {
            let batch = chunk
                .iter()
                .map(|(id, input)| {
                    let start = StartSaga {
                        saga_id: id.clone(),
                        saga: saga.to_string(),
                        version: None,
                        input: input.clone(),
                        requested_at: now,
                    };
                    OutgoingMessage::new(Envelope::Start(start).encode())
                })
                .collect();
            self.queue.send_batch(ORCHESTRATOR_QUEUE, batch).await?;
        }
        self.settle().await
    }

    /// The harness's clock: what "now" is for the orchestrator and workers.
    pub fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }

    /// Now, in milliseconds since the epoch.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Moves time forward by `by`, stopping at every due timer on the way
    /// (in order) and handling what it causes, as if that time had passed.
    pub async fn advance(&mut self, by: Duration) -> Result<(), HarnessError> {
        let target = self.clock.now().saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        loop {
            let next = self.next_due().filter(|at| *at <= target);
            match next {
                Some(at) => self.clock.set(at.max(self.clock.now())),
                None => {
                    self.clock.set(target);
                    return self.settle().await;
                }
            }
            self.settle().await?;
        }
    }

    /// Moves time forward, timer by timer, until every saga is terminal or
    /// `limit` has passed; returns how long it took.
    pub async fn run_until_terminal(&mut self, limit: Duration) -> Result<Duration, HarnessError> {
        let start = self.clock.now();
        let target = start.saturating_add(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        self.settle().await?;
        while !self.store.all().iter().all(|r| r.instance.status.is_terminal()) {
            match self.next_due().filter(|at| *at <= target) {
                Some(at) => self.clock.set(at.max(self.clock.now())),
                None => {
                    self.clock.set(target);
                    self.settle().await?;
                    break;
                }
            }
            self.settle().await?;
        }
        Ok(Duration::from_millis(self.clock.now() - start))
    }

    /// The next time something is due: a saga timer or a delayed message.
    fn next_due(&self) -> Option<Millis> {
        let timers = self
            .store
            .all()
            .into_iter()
            .filter(|r| !r.instance.status.is_terminal())
            .filter_map(|r| r.instance.next_wakeup())
            .min();
        [timers, self.queue.next_visible()].into_iter().flatten().min()
    }

    /// Handles everything that can be handled now: orchestrator messages,
    /// served services' commands, due timers; until nothing moves.
    async fn settle(&mut self) -> Result<(), HarnessError> {
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            let got = self.receive(ORCHESTRATOR_QUEUE).await?;
            if !got.is_empty() {
                moved = true;
                self.orchestrator.handle_messages(got).await;
            }
            for (service, worker) in &self.workers {
                let got = self.queue.receive(service, Receive::up_to(MAX_BATCH).visibility(VISIBILITY)).await?;
                if !got.is_empty() {
                    moved = true;
                    worker.handle(got).await;
                }
            }
            if self.orchestrator.fire_due_timers().await? > 0 {
                moved = true;
            }
            let held = self.orchestrator.held();
            if held > 0 {
                self.orchestrator.admit_held().await;
                moved |= self.orchestrator.held() < held;
            }
            if !moved {
                return Ok(());
            }
        }
        Err(HarnessError::Unsettled(MAX_ROUNDS))
    }

    async fn receive(&self, queue: &str) -> Result<Vec<ReceivedMessage>, HarnessError> {
        Ok(self.queue.receive(queue, Receive::up_to(MAX_BATCH).visibility(VISIBILITY)).await?)
    }

    /// Every command dispatched so far, in the order sent (re-sends included).
    pub fn dispatched(&self) -> Vec<Command> {
        self.queue.sent().into_iter().filter_map(|(_, body)| command(&body)).collect()
    }

    /// Commands waiting on `service`'s queue, not answered yet.
    pub fn pending(&self, service: &str) -> Vec<Command> {
        self.queue.bodies(service).iter().filter_map(|b| command(b)).collect()
    }

    /// Answers the oldest pending command named `command` (an action or a
    /// compensation) with success and `output`; returns it.
    pub async fn succeed(&mut self, command: &str, output: Value) -> Result<Command, HarnessError> {
        self.answer(command, Some(Outcome::Succeeded { output })).await
    }

    /// Answers it with a business refusal.
    pub async fn refuse(&mut self, command: &str, reason: &str) -> Result<Command, HarnessError> {
        self.answer(command, Some(Outcome::Refused { reason: reason.to_string() })).await
    }

    /// Answers it with a transient failure (the orchestrator retries).
    pub async fn fail(&mut self, command: &str, error: &str) -> Result<Command, HarnessError> {
        self.answer(command, Some(Outcome::Transient { error: error.to_string() })).await
    }

    /// Takes it off its queue with no answer: as if the worker died with
    /// it for good, so only its timeout will tell.
    pub async fn lose(&mut self, command: &str) -> Result<Command, HarnessError> {
        self.answer(command, None).await
    }

    /// The service whose queue holds a pending command named `command`
    /// (else the one the definitions say runs it, for the error message).
    fn service_of(&self, command: &str) -> Result<String, HarnessError> {
        let services = self.defs.services();
        if let Some(s) = services.iter().find(|s| self.pending(s).iter().any(|c| c.command == command)) {
            return Ok(s.clone());
        }
        self.defs
            .all()
            .iter()
            .flat_map(|d| d.steps.iter())
            .find(|s| s.action == command || s.compensation.as_deref() == Some(command))
            .map(|s| s.service.clone())
            .ok_or_else(|| HarnessError::UnknownCommand(command.to_string()))
    }

    async fn answer(&mut self, name: &str, outcome: Option<Outcome>) -> Result<Command, HarnessError> {
        let service = self.service_of(name)?;
        let mut held = Vec::new();
        loop {
            let got = self.receive(&service).await?;
            if got.is_empty() {
                break;
            }
            held.extend(got);
        }
        // The oldest one by message id order (ids are numbered).
        held.sort_by_key(|m| m.message_id.trim_start_matches('m').parse::<u64>().unwrap_or(u64::MAX));
        let target = held.iter().position(|m| command(&m.body).is_some_and(|c| c.command == name));
        for (i, m) in held.iter().enumerate() {
            if Some(i) != target {
                self.queue.change_visibility(&service, &m.receipt_handle, Duration::ZERO).await?;
            }
        }
        let Some(target) = target else {
            let pending = held.iter().filter_map(|m| command(&m.body)).map(|c| c.command).collect();
            return Err(HarnessError::NoSuchCommand { service, command: name.to_string(), pending });
        };
        let message = &held[target];
        let Some(c) = command(&message.body) else {
            return Err(HarnessError::UnknownCommand(name.to_string()));
        };
        if let Some(outcome) = outcome {
            let worker = WorkerInfo {
                service: service.clone(),
                instance: "harness".to_string(),
                fingerprint: "harness".to_string(),
            };
            let reply = ReplyMessage::answering(&c, outcome, worker, self.clock.now());
            self.queue.send(&c.reply_to, OutgoingMessage::new(Envelope::Reply(reply).encode())).await?;
        }
        self.queue.delete_batch(&service, std::slice::from_ref(&message.receipt_handle)).await?;
        self.settle().await?;
        Ok(c)
    }

    /// The saga's state now.
    pub async fn saga(&self, id: &str) -> Result<Option<SagaInstance>, HarnessError> {
        Ok(self.store.load(&[id.to_string()]).await?.into_iter().next().map(|r| r.instance))
    }

    /// The saga's status now (`None`: no such saga).
    pub async fn status(&self, id: &str) -> Result<Option<SagaStatus>, HarnessError> {
        Ok(self.saga(id).await?.map(|s| s.status))
    }

    /// The saga's history, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, HarnessError> {
        Ok(self.store.history(id).await?)
    }

    /// Start requests held back by the orchestrator's admission control.
    pub fn held(&self) -> usize {
        self.orchestrator.held()
    }

    /// Every saga stored, by id.
    pub fn sagas(&self) -> BTreeMap<String, SagaInstance> {
        self.store.all().into_iter().map(|r| (r.instance.id.clone(), r.instance)).collect()
    }

    /// The queue (to inspect or inject messages).
    pub fn queue(&self) -> Arc<MemoryQueue> {
        self.queue.clone()
    }

    /// The store.
    pub fn store(&self) -> Arc<MemoryStore> {
        self.store.clone()
    }
}

fn command(body: &str) -> Option<Command> {
    match Envelope::decode(body) {
        Ok(Envelope::Command(c)) => Some(c),
        _ => None,
    }
}
