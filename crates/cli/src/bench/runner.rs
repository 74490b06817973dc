//! The shared scenario runner: what every scenario with long-lived connections does the same
//! way, so that each scenario states only what differs.
//!
//! 1. [`Runner::spawn`] one task per connection: it connects through [`Connector::connect`]
//!    (at most `--connect-concurrency` at once, each within `--connect-timeout`), prepares
//!    the connection (subscribe, join) and then follows the [`Phase`]s;
//! 2. [`Runner::set_up`] waits for every connection (bounded by `--setup-timeout`, with a
//!    progress line) and stops the tasks if set-up failed;
//! 3. [`Runner::measure`] starts the server CPU meter, the clock and the progress line;
//! 4. [`Runner::phase`] moves the tasks on ([`Phase::Run`], [`Phase::Drain`], [`Phase::Stop`]),
//!    [`wait_until`] waits out a drain, [`collect`] joins the tasks (what they found comes
//!    back);
//! 5. the scenario fills its [`Report`](super::stats::Report) and prints it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::CommonArgs;
use super::client::{Phase, PhaseRx, Target, Ws};
use super::stats::{self, CpuShares};

/// How many connections set-up needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Every one: the run fails otherwise.
    All,
    /// At least one: the run goes on with what is connected (and reports the failures).
    Any,
}

/// One scenario run: the phase every connection task follows and the set-up bookkeeping.
#[derive(Debug)]
pub struct Runner<'a> {
    common: &'a CommonArgs,
    phase: watch::Sender<Phase>,
    phase_rx: PhaseRx,
    /// Dropped once set-up is being waited for (the waiter then sees the end of the reports).
    setup: Option<Setup>,
    reports: mpsc::UnboundedReceiver<Result<(), String>>,
    spawned: usize,
}

/// Hands connection tasks their connection.
#[derive(Debug, Clone)]
pub struct Connector {
    setup: Setup,
    timeout: Duration,
}

/// Connection tasks report `ready` (connected and prepared) or their error.
#[derive(Debug, Clone)]
struct Setup {
    tx: mpsc::UnboundedSender<Result<(), String>>,
    gate: Arc<Semaphore>,
}

/// What set-up achieved.
#[derive(Debug, Default)]
pub struct SetupOutcome {
    pub ready: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub took: Duration,
}

/// The measured part of a run, from [`Runner::measure`].
#[derive(Debug)]
pub struct Measuring {
    pub started: Instant,
    cpu: stats::CpuMeter,
    progress: Option<JoinHandle<()>>,
}

impl<'a> Runner<'a> {
    pub fn new(common: &'a CommonArgs) -> Self {
        let (phase, phase_rx) = watch::channel(Phase::Setup);
        let (tx, reports) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
        Self {
            common,
            phase,
            phase_rx,
            setup: Some(Setup { tx, gate }),
            reports,
            spawned: 0,
        }
    }

    /// Spawns a connection task: `task` gets the [`Connector`] for its connection and the
    /// phase to follow. Every spawned task must connect (or fail to) exactly once.
    pub fn spawn<T, F>(&mut self, task: impl FnOnce(Connector, PhaseRx) -> F) -> JoinHandle<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.spawned += 1;
        let setup = match &self.setup {
            Some(setup) => setup.clone(),
            // After `set_up`: a connector whose reports nobody reads.
            None => Setup {
                tx: mpsc::unbounded_channel().0,
                gate: Arc::new(Semaphore::new(1)),
            },
        };
        let connector = Connector {
            setup,
            timeout: self.common.connect_timeout,
        };
        tokio::spawn(task(connector, self.phase_rx.clone()))
    }

    /// Waits for every spawned task's connection (at most `--setup-timeout`, printing progress
    /// unless `--quiet`); connections still pending at the deadline count as failed. When
    /// set-up fell short of `need`, the tasks are stopped and the run fails.
    pub async fn set_up(&mut self, what: &str, need: Need) -> anyhow::Result<SetupOutcome> {
        self.setup = None;
        let expected = self.spawned;
        let common = self.common;
        let started = Instant::now();
        let deadline = started + common.setup_timeout;
        let mut outcome = SetupOutcome::default();
        let mut last_print = started;
        while outcome.ready + outcome.failed < expected {
            if Instant::now() >= deadline {
                let pending = expected - outcome.ready - outcome.failed;
                let err = format!(
                    "{pending} connections still not set up after {:?} (--setup-timeout)",
                    common.setup_timeout
                );
                eprintln!("error: {err}");
                outcome.failed += pending;
                outcome.first_error.get_or_insert(err);
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), self.reports.recv()).await {
                Ok(Some(Ok(()))) => outcome.ready += 1,
                Ok(Some(Err(err))) => {
                    outcome.failed += 1;
                    if outcome.first_error.is_none() {
                        eprintln!("error: {err}");
                        outcome.first_error = Some(err);
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
            if !common.quiet && last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                eprintln!(
                    "[setup {:>3.0}s] {what}: {} ready, {} failed of {expected}",
                    started.elapsed().as_secs_f64(),
                    outcome.ready,
                    outcome.failed
                );
            }
        }
        outcome.took = started.elapsed();
        let first_error = outcome.first_error.as_deref().unwrap_or("unknown");
        let short = match need {
            Need::All if outcome.ready < expected => Some(format!(
                "{} of {expected} connections could not be set up; first error: {first_error}",
                expected - outcome.ready
            )),
            Need::Any if outcome.ready == 0 => Some(format!(
                "no connection could be set up; first error: {first_error}"
            )),
            Need::All | Need::Any => None,
        };
        if let Some(err) = short {
            self.phase(Phase::Stop);
            bail!(err);
        }
        Ok(outcome)
    }

    /// Starts measuring: the server's CPU meter, the clock, the progress line (`line` gets the
    /// time since the start). The scenario then moves the tasks to [`Phase::Run`].
    pub fn measure(&self, line: impl Fn(Duration) -> String + Send + 'static) -> Measuring {
        Measuring {
            cpu: stats::CpuMeter::start(self.common.server_pid),
            started: Instant::now(),
            progress: stats::progress(self.common.quiet, line),
        }
    }

    /// Moves every connection task to `phase`.
    pub fn phase(&self, phase: Phase) {
        let _ = self.phase.send(phase);
    }
}

impl Connector {
    /// Connects (at most `--connect-concurrency` at once) and runs `prepare` (e.g. subscribe);
    /// reports the outcome to set-up. `None` when it failed (already reported).
    pub async fn connect<F>(&self, target: &Target, index: u64, prepare: F) -> Option<Ws>
    where
        F: AsyncFnOnce(&mut Ws) -> anyhow::Result<()>,
    {
        let result = async {
            let _permit = self.setup.gate.acquire().await;
            let mut ws = target.connect(index, self.timeout).await?;
            prepare(&mut ws).await?;
            anyhow::Ok(ws)
        }
        .await;
        match result {
            Ok(ws) => {
                let _ = self.setup.tx.send(Ok(()));
                Some(ws)
            }
            Err(err) => {
                let _ = self.setup.tx.send(Err(format!("{err:#}")));
                None
            }
        }
    }
}

impl Measuring {
    /// The server's CPU shares since the start.
    pub fn cpu(&self) -> CpuShares {
        self.cpu.shares()
    }

    /// Ends the progress line.
    pub fn stop_progress(&mut self) {
        stats::stop_progress(self.progress.take());
    }
}

impl Drop for Measuring {
    fn drop(&mut self) {
        self.stop_progress();
    }
}

/// Polls `done` every `every` until it holds or `deadline` passes; whether it held.
pub async fn wait_until(
    deadline: Instant,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// Joins the tasks, in order, and keeps what each found (a task that ended without a result,
/// e.g. could not connect, adds nothing).
pub async fn collect<T>(tasks: Vec<JoinHandle<Option<T>>>) -> Vec<T> {
    let mut found = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(Some(result)) = task.await {
            found.push(result);
        }
    }
    found
}

/// Joins the tasks within `budget`; whether they all ended.
pub async fn join_within<T>(tasks: Vec<JoinHandle<T>>, budget: Duration) -> bool {
    let joining = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    tokio::time::timeout(budget, joining).await.is_ok()
}
