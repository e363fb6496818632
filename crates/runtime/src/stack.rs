//! The in-process stack: orchestrator replicas and workers running as tasks
//! of this process on one queue and one store, stopped together by one
//! token. The demo, the benchmarks and the multi-replica tests all run on
//! it; the separate processes (`run_orchestrator`, `run_worker`) run the
//! same parts one per process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqsaga_orchestrator::{Definitions, Orchestrator, OrchestratorOptions, OrchestratorStats, SystemClock};
use sqsaga_queue::Queue;
use sqsaga_store::SagaStore;
use sqsaga_worker::db::ParticipantDb;
use sqsaga_worker::{AnyParticipant, Participant, Worker, WorkerOptions, WorkerStats};
use tokio::task::JoinSet;

use crate::shutdown::CancellationToken;

/// Knobs of [`Stack::start`].
#[derive(Debug, Clone, PartialEq)]
pub struct StackOptions {
    /// Orchestrator replicas, all on the same queue and store.
    pub orchestrators: usize,
    pub orchestrator_pollers: usize,
    /// Pollers per worker; enough in flight to fill group commits.
    pub worker_pollers: usize,
    /// Long-poll wait of every poller.
    pub wait: Duration,
    /// How often the orchestrators look for due timers.
    pub timer_interval: Duration,
    /// Budget each worker has to finish in-flight work when the stack stops.
    pub drain_timeout: Duration,
    /// The orchestrators' admission maximum (`None`: no admission control,
    /// for a driver that paces the starts itself).
    pub max_in_flight: Option<u64>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            orchestrators: 1,
            orchestrator_pollers: 4,
            worker_pollers: 8,
            wait: Duration::from_secs(1),
            timer_interval: Duration::from_millis(50),
            drain_timeout: Duration::from_secs(10),
            max_in_flight: OrchestratorOptions::default().max_in_flight,
        }
    }
}

/// Tasks of this process that stop together.
pub struct Stack {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    /// Counters of each orchestrator replica.
    pub orchestrators: Vec<Arc<OrchestratorStats>>,
    /// Counters of each worker, in the order they were started.
    pub workers: Vec<Arc<WorkerStats>>,
    /// Receive loops running (orchestrators' and workers').
    pollers: usize,
}

impl Default for Stack {
    fn default() -> Self {
        Stack::new()
    }
}

impl Stack {
    /// An empty stack.
    pub fn new() -> Stack {
        Stack {
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
            orchestrators: Vec::new(),
            workers: Vec::new(),
            pollers: 0,
        }
    }

    /// `options.orchestrators` replicas and one worker per participant,
    /// the worker's service being the participant's name. The participants
    /// share one database adapter type (`Participant` alone: SQLite).
    pub fn start<D: ParticipantDb>(
        queue: Arc<dyn Queue>,
        store: Arc<dyn SagaStore>,
        definitions: Arc<Definitions>,
        participants: &[(String, Arc<Participant<D>>)],
        o: &StackOptions,
    ) -> Stack {
        let any: Vec<(String, Arc<dyn AnyParticipant>)> =
            participants.iter().map(|(s, p)| (s.clone(), p.clone() as Arc<dyn AnyParticipant>)).collect();
        Stack::start_any(queue, store, definitions, &any, o)
    }

    /// [`Stack::start`] with participants of any database each.
    pub fn start_any(
        queue: Arc<dyn Queue>,
        store: Arc<dyn SagaStore>,
        definitions: Arc<Definitions>,
        participants: &[(String, Arc<dyn AnyParticipant>)],
        o: &StackOptions,
    ) -> Stack {
        let mut stack = Stack::new();
        for _ in 0..o.orchestrators.max(1) {
            let orchestrator = Orchestrator::new(
                definitions.clone(),
                queue.clone(),
                store.clone(),
                Arc::new(SystemClock),
                OrchestratorOptions {
                    pollers: o.orchestrator_pollers,
                    wait: o.wait,
                    timer_interval: o.timer_interval,
                    max_in_flight: o.max_in_flight,
                    ..OrchestratorOptions::default()
                },
            );
            stack.spawn_orchestrator(orchestrator, o.orchestrator_pollers);
        }
        for (service, participant) in participants {
            let options = WorkerOptions {
                concurrency: o.worker_pollers,
                wait: o.wait,
                drain_timeout: o.drain_timeout,
                ..WorkerOptions::new(service, &format!("{service}-{}", std::process::id()))
            };
            stack.spawn_worker(Worker::new(options, queue.clone(), participant.clone()), o.worker_pollers);
        }
        stack
    }

    /// Runs `orchestrator` (with `pollers` receive loops) until the stack stops.
    pub fn spawn_orchestrator(&mut self, orchestrator: Orchestrator, pollers: usize) {
        self.orchestrators.push(orchestrator.stats());
        self.pollers += pollers.max(1);
        self.tasks.spawn(orchestrator.run(self.shutdown.clone().cancelled_owned()));
    }

    /// Runs `worker` (with `pollers` receive loops) until the stack stops.
    pub fn spawn_worker(&mut self, worker: Worker, pollers: usize) {
        self.workers.push(worker.stats());
        self.pollers += pollers.max(1);
        let stop = self.shutdown.clone().cancelled_owned();
        self.tasks.spawn(async move {
            if let Err(e) = worker.run(stop).await {
                tracing::error!(error = %e, "Worker stopped with an error.");
            }
        });
    }

    /// Runs another task that ends when the token it is given is cancelled.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.shutdown.clone()));
    }

    /// Commands executed by the workers so far.
    pub fn steps(&self) -> u64 {
        self.workers.iter().map(|w| w.snapshot().processed).sum()
    }

    /// Sagas that ended (completed or compensated), from the orchestrators'
    /// own bookkeeping: no request to the store. On a fresh store it is
    /// exact: every transition is counted by the one replica that committed it.
    pub fn finished(&self) -> u64 {
        self.orchestrators
            .iter()
            .flat_map(|o| o.sagas.snapshot())
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }

    /// Receive loops running.
    pub fn pollers(&self) -> usize {
        self.pollers
    }

    /// Stops everything and waits for it (workers drain within their budget).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
