//! The agent: the loop that drives tail → pipeline → deliver and moves
//! checkpoints by acknowledgements.
//!
//! [`run`] takes a [`Plan`] and the loop's [`Wakes`] (the caller installs
//! signal handlers that wake it; tests wake it themselves), decides the
//! secret key, builds the sink, and runs an [`Agent`] to the end.
//!
//! A [`Wake::Reload`] asks the [`Reloader`] for a new plan and applies the
//! difference. New patterns and event settings replace the pipeline at
//! once: they apply from the next line. Other log paths, another state
//! folder or another backend restart the tailer in place: reading stops,
//! what is in flight is delivered (up to `shutdown_timeout_ms`), the
//! checkpoints are saved, and the new tailer resumes from them exactly as a
//! restarted agent would. So a reload loses no line, and repeats only lines
//! that a backend took without acknowledging them in time (with their
//! `event_id`). A plan that cannot be made leaves the old one in force.
//! [`Agent::start`] takes any [`EventSink`], so tests drive the whole agent
//! in-process with a sink of their own.
//!
//! One thread runs the loop and owns the sources (the tailer, and any
//! other [`Source`]), the pipeline and the sink; the sender (with a
//! backend), the file watcher and the signal thread only wake it. The loop
//! knows sources only through the [`Source`] trait: it reads while the sink
//! has room, hands each acknowledgement to the source its line came from,
//! saves positions about once a second, and sleeps when there is nothing to
//! read. [`open_sources`] is where each kind of input is registered. At a stop it drains: reads no more and waits
//! (up to `shutdown_timeout_ms`) for what is in flight.

mod key;
mod status;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::deliver::{AckPoint, BackendSink, EventSink, StdoutSink};
use crate::diagnostics::Counters;
use crate::journal::JournalSource;
use crate::metrics::Telemetry;
use crate::pipeline::Pipeline;
use crate::plan::{Delivery, Plan};
use crate::secret::Secret;
use crate::source::{Handling, Input, Look, Source};
use crate::tail::watch::DirWatcher;
use crate::tail::{CheckpointStore, Tailer};
use crate::wake::{Wake, WakeSet, Wakes};
use key::KeyDecision;
use status::{Progress, Status};

/// Lines read per file before the loop delivers and acknowledges.
const POLL_BUDGET: usize = 8192;
/// How often the watched paths are scanned even without inotify events.
const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// How often changed checkpoints are saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// What a run did, for the final message and the exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub lines_read: u64,
    pub events: u64,
    pub lines_failed: u64,
    pub lines_blank: u64,
    /// Lines cut at `max_line_bytes`.
    pub lines_truncated: u64,
    /// Events sent without their custom metrics, which were invalid.
    pub metrics_invalid: u64,
    /// Lines of files whose format is not known, skipped.
    pub lines_unrecognised: u64,
    /// Reads of a file that failed (each retried).
    pub read_errors: u64,
    /// Files named that the agent may not read, at the end.
    pub files_unreadable: u64,
    /// Events the sink acknowledged.
    pub acknowledged: u64,
    /// Events handed to the sink and not acknowledged when the agent
    /// stopped (sent again at the next start).
    pub unacknowledged: u64,
    /// Why the run ended.
    pub end: End,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum End {
    /// `--once`: everything read and delivered.
    #[default]
    Finished,
    /// A signal (SIGTERM, SIGINT, SIGHUP) stopped it.
    Stopped,
    /// `--once-timeout` passed before everything was delivered.
    TimedOut,
    /// The sink failed (standard output closed, say).
    SinkFailed,
}

impl Report {
    /// Whether a `--once` run did its whole job: read every file to its
    /// end and delivered every event, skipping no file for its format.
    pub fn once_complete(&self) -> bool {
        self.end == End::Finished
            && self.unacknowledged == 0
            && self.lines_unrecognised == 0
            && self.files_unreadable == 0
    }
}

/// Makes a new plan from the configuration as it is now (for a reload).
pub type Reloader<'a> = Box<dyn FnMut() -> anyhow::Result<Plan> + 'a>;

/// Runs the agent until the files are read and delivered (`once`), or
/// until a [`Wake::Shutdown`]. With a `reloader`, [`Wake::Reload`] applies
/// a new plan.
pub fn run(
    plan: Plan,
    wakes: &Wakes,
    telemetry: Arc<Telemetry>,
    reloader: Option<Reloader<'_>>,
) -> anyhow::Result<Report> {
    let key = match decide_key(&plan.key, wakes, &telemetry) {
        KeyDecision::Key(key) => Some(key),
        KeyDecision::Plain => None,
        KeyDecision::Stopped => return Ok(Report::default()),
    };
    let sink = open_sink(&plan.delivery, wakes, &telemetry)?;
    let mut agent = Agent::start(plan, key, sink, wakes, telemetry)?;
    agent.reloader = reloader;
    agent.run()
}

/// The key decision, with `/ready` saying "not ready" while a key is
/// fetched: no IP is pseudonymised, and no event built, before it.
fn decide_key(
    source: &crate::plan::KeySource,
    wakes: &Wakes,
    telemetry: &Telemetry,
) -> KeyDecision {
    let fetching = matches!(source, crate::plan::KeySource::Fetch { .. });
    telemetry.key_missing.store(fetching, Ordering::Relaxed);
    let decision = key::decide(source, wakes);
    telemetry.key_missing.store(false, Ordering::Relaxed);
    if matches!(decision, KeyDecision::Plain) {
        tracing::warn!(
            "no secret_key configured: client IPs go out in plain text (set secret_key, or backend_url to fetch it)"
        );
    }
    decision
}

/// The sink the plan delivers to (a sender thread, for the backend).
fn open_sink(
    delivery: &Delivery,
    wakes: &Wakes,
    telemetry: &Telemetry,
) -> anyhow::Result<Box<dyn EventSink>> {
    Ok(match delivery {
        Delivery::Stdout => Box::new(StdoutSink::new()),
        Delivery::Backend { sender, batches } => {
            let stats = telemetry.sender.clone().unwrap_or_default();
            let sender =
                crate::deliver::backend::Sender::spawn((**sender).clone(), wakes.waker(), stats)
                    .context("starting the sender thread")?;
            Box::new(BackendSink::new(*batches, sender))
        }
    })
}

/// What the loop does when it returns.
enum Next {
    Stop,
    /// Start again in place with this plan (a reload).
    Restart(Box<(Plan, Option<Secret>)>),
}

/// Where the loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and delivering.
    Running,
    /// Not reading any more; waiting for what is in flight (until a time,
    /// at shutdown or reload; for ever with `--once`).
    Draining { until: Option<Instant> },
}

/// A source the loop reads, and where its logs are in the pipeline.
struct Registered {
    source: Box<dyn Source + Send>,
    /// The pipeline's log index (the plan's source index, then the handed-in
    /// inputs' logs) of each of the source's own log numbers.
    logs: Vec<usize>,
    /// Handed in with [`Agent::start_with_inputs`], with its formats: a
    /// restart in place keeps it (the plan opens the others again).
    handed_in: Option<Vec<Option<Arc<crate::parse::Pattern>>>>,
}

/// The running agent: its components and the loop's state.
pub struct Agent<'w> {
    /// What lines are read from: the plan's files first, then the inputs
    /// handed in.
    sources: Vec<Registered>,
    pipeline: Pipeline,
    sink: Box<dyn EventSink>,
    /// `None` with `--once`: nothing is followed.
    watcher: Option<DirWatcher>,
    wakes: &'w Wakes,
    phase: Phase,
    once: bool,
    /// With `--once-timeout`: when to give up.
    give_up_at: Option<Instant>,
    shutdown_timeout: Duration,
    end: End,
    last_scan: Instant,
    last_save: Instant,
    acks: Vec<AckPoint>,
    /// Events pushed into the sink, and acknowledged by it.
    pushed: u64,
    acknowledged: u64,
    /// The sink failed: the agent must stop.
    fatal: Option<anyhow::Error>,
    telemetry: Arc<Telemetry>,
    status: Status,
    /// `--once` on a terminal: how far the backfill is.
    progress: Option<Progress>,
    /// The plan in force: what a reload compares with, and goes back to if
    /// the new one cannot start.
    plan: Plan,
    /// The secret key decided for it (configured, fetched, or none).
    key: Option<Secret>,
    reloader: Option<Reloader<'w>>,
    /// A reload waiting for the drain before the restart in place, with
    /// its key.
    pending: Option<Box<(Plan, Option<Secret>)>>,
    /// The drain ended with events not acknowledged.
    drain_incomplete: bool,
}

impl<'w> Agent<'w> {
    /// Opens the checkpoints, finds the files, and chooses their patterns;
    /// `key` is the secret key decided for the plan's [`KeySource`]
    /// (`crate::plan::KeySource`).
    pub fn start(
        plan: Plan,
        key: Option<Secret>,
        sink: Box<dyn EventSink>,
        wakes: &'w Wakes,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Self> {
        Agent::start_with_inputs(plan, key, sink, wakes, telemetry, Vec::new())
    }

    /// As [`Agent::start`], reading also from `inputs`, sources of kinds
    /// the plan does not open (a test's own, say): they are polled,
    /// acknowledged and saved like the plan's, and a reload keeps them.
    pub fn start_with_inputs(
        plan: Plan,
        key: Option<Secret>,
        sink: Box<dyn EventSink>,
        wakes: &'w Wakes,
        telemetry: Arc<Telemetry>,
        inputs: Vec<Input>,
    ) -> anyhow::Result<Self> {
        Agent::open(plan, key, sink, wakes, telemetry, inputs).map_err(|(e, _)| e)
    }

    /// [`Agent::start_with_inputs`], giving the inputs back when it fails
    /// (a reload that cannot start goes back to the old plan with them).
    fn open(
        plan: Plan,
        key: Option<Secret>,
        sink: Box<dyn EventSink>,
        wakes: &'w Wakes,
        telemetry: Arc<Telemetry>,
        inputs: Vec<Input>,
    ) -> Result<Self, (anyhow::Error, Vec<Input>)> {
        let current = plan.clone();
        let mut sources = match open_sources(&plan, &telemetry, wakes) {
            Ok(sources) => sources,
            Err(e) => return Err((e, inputs)),
        };
        let mut next_log = plan_logs(&plan);
        for input in inputs {
            let logs = (next_log..next_log + input.formats.len()).collect();
            next_log += input.formats.len();
            sources.push(Registered {
                source: input.source,
                logs,
                handed_in: Some(input.formats),
            });
        }
        let mut watcher = match plan.once {
            true => None,
            false => match DirWatcher::new(wakes.waker()) {
                Ok(w) => Some(w),
                Err(e) => {
                    let e = anyhow::Error::new(e).context("starting the file watcher (inotify)");
                    return Err((e, handed_in(sources)));
                }
            },
        };
        for i in 0..sources.len() {
            if let Err(e) = sources[i].source.look(Look::Changed) {
                return Err((e.into(), handed_in(sources)));
            }
        }
        if let Some(w) = &mut watcher {
            for (dir, e) in w.watch(&watch_dirs(&sources)) {
                tracing::warn!(
                    "cannot watch {} ({e}); relying on the periodic scan",
                    dir.display()
                );
            }
        }
        let pipeline = pipeline_for(&current, &key, &sources, &telemetry);
        telemetry.started.store(true, Ordering::Relaxed);
        // Files found from now on are new: read from their first line.
        let mut inputs_now = 0;
        for r in &sources {
            r.source.origins(&mut |_| inputs_now += 1);
        }
        tracing::info!(
            "ready: following {inputs_now} files of {} configured logs",
            next_log
        );
        let progress = plan
            .once
            .then(|| {
                let backlog = sources
                    .iter()
                    .flat_map(|r| r.source.lags())
                    .map(|(_, bytes)| bytes)
                    .sum();
                Progress::new(backlog, &telemetry)
            })
            .flatten();
        Ok(Agent {
            progress,
            status: Status::new(plan.status_interval, &telemetry),
            telemetry,
            sources,
            pipeline,
            sink,
            watcher,
            wakes,
            phase: Phase::Running,
            once: plan.once,
            give_up_at: plan.once_timeout.map(|t| Instant::now() + t),
            shutdown_timeout: plan.shutdown_timeout,
            end: End::Finished,
            last_scan: Instant::now(),
            last_save: Instant::now(),
            acks: Vec::new(),
            pushed: 0,
            acknowledged: 0,
            fatal: None,
            plan: current,
            key,
            reloader: None,
            pending: None,
            drain_incomplete: false,
        })
    }

    /// Runs the loop to its end and saves the checkpoints. A sink that
    /// fails ends the run too (checkpoints saved): the error says how many
    /// events were not delivered.
    pub fn run(mut self) -> anyhow::Result<Report> {
        loop {
            match self.run_loop() {
                Ok(Next::Restart(next)) => {
                    let (plan, key) = *next;
                    self = self.restart(plan, key)?;
                }
                Ok(Next::Stop) => return Ok(self.finish()),
                Err(e) => return Err(self.failed(e)),
            }
        }
    }

    /// Ends a run whose sink failed: checkpoints saved, and the error
    /// says how many events were not delivered.
    fn failed(&mut self, e: anyhow::Error) -> anyhow::Error {
        self.end = End::SinkFailed;
        let report = self.finish();
        e.context(format!(
            "{} events were not delivered (they are sent again at the next start)",
            report.unacknowledged
        ))
    }

    fn run_loop(&mut self) -> anyhow::Result<Next> {
        loop {
            let more = self.step()?;
            if self.drained()? {
                return Ok(match self.pending.take() {
                    Some(plan) => Next::Restart(plan),
                    None => Next::Stop,
                });
            }
            if self.give_up_at.is_some_and(|t| Instant::now() >= t) {
                tracing::warn!(
                    "--once-timeout passed: stopping with events not delivered; they are sent again at the next start"
                );
                self.end = End::TimedOut;
                return Ok(Next::Stop);
            }
            if more && self.phase == Phase::Running {
                continue;
            }
            let woken = self.wait();
            if woken.contains(Wake::Shutdown) {
                // A second signal: stop waiting. (The first, even while
                // `--once` waits for its last acknowledgements, gives what
                // is in flight `shutdown_timeout`, as README says.)
                if self.end == End::Stopped {
                    return Ok(Next::Stop);
                }
                self.end = End::Stopped;
                // A reload waiting for its drain gives way to the stop.
                self.pending = None;
                self.begin_drain(Some(self.shutdown_timeout));
            } else if woken.contains(Wake::Reload) {
                self.reload();
            }
            if self.phase == Phase::Running {
                self.scan(woken.contains(Wake::Structure))?;
            }
        }
    }

    /// One round: read what the sink has room for, send what is due, take
    /// acknowledgements, save checkpoints when due. True when there is more
    /// to read at once.
    fn step(&mut self) -> anyhow::Result<bool> {
        let mut more = false;
        let mut read_to_end = false;
        let held_back = self.sink.is_full();
        if self.phase == Phase::Running && !held_back {
            more = self.read()?;
            read_to_end = !more;
        }
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        self.sink
            .flush(Instant::now())
            .context("delivering events")?;
        let acked = self.take_acks();
        // The sink made room during this round (it handed waiting batches
        // on, or took acknowledgements): read on at once rather than at
        // the next wake-up, which may be a second away.
        more |= held_back && self.phase == Phase::Running && !self.sink.is_full();
        // Acknowledged files may now be closed for the ones waiting their
        // turn (more files than max_open_files): read on at once.
        more |= acked > 0
            && self.phase == Phase::Running
            && self.sources.iter().any(|r| r.source.waits_for_room());
        if self.last_save.elapsed() >= SAVE_EVERY {
            for r in &mut self.sources {
                r.source.tick();
            }
            if self.positions_dirty() {
                self.save_checkpoints(false);
            }
            let lags = self.sources.iter().flat_map(|r| r.source.lags()).collect();
            self.telemetry.tail.set_lag(lags);
            self.last_save = Instant::now();
        }
        self.status.log_if_due(&self.telemetry);
        if let Some(p) = &self.progress {
            p.update(&self.telemetry);
        }
        if self.phase == Phase::Running
            && self.once
            && read_to_end
            && !self.sources.iter().any(|r| r.source.holds_back())
            && !self.sink.is_full()
        {
            self.begin_drain(None);
        }
        Ok(more)
    }

    /// Hands lines from the sources through the pipeline into the sink.
    /// True when some source has more to read at once.
    fn read(&mut self) -> anyhow::Result<bool> {
        let Agent {
            sources,
            pipeline,
            sink,
            fatal,
            pushed,
            ..
        } = self;
        let mut more = false;
        for (index, registered) in sources.iter_mut().enumerate() {
            let Registered { source, logs, .. } = registered;
            let outcome = source.poll(POLL_BUDGET, &mut |mut line| {
                if fatal.is_some() {
                    return Handling::Pending;
                }
                // The source's own log number, as the pipeline knows it.
                line.origin.log = logs.get(line.origin.log).copied().unwrap_or(usize::MAX);
                let Some(event) = pipeline.line(&line) else {
                    return Handling::Done;
                };
                let point = AckPoint {
                    source: index as u32,
                    part: line.part,
                    end: line.line.end,
                };
                if let Err(e) = sink.push(event, point) {
                    *fatal = Some(anyhow::Error::new(e).context("delivering events"));
                }
                *pushed += 1;
                Handling::Pending
            })?;
            more |= outcome.more;
        }
        Ok(more)
    }

    /// Whether some source's positions changed since they were saved.
    fn positions_dirty(&self) -> bool {
        self.sources.iter().any(|r| r.source.positions_dirty())
    }

    /// Hands what the sink acknowledged back to the sources it came from
    /// (which move their positions); returns how many events that was.
    fn take_acks(&mut self) -> usize {
        self.sink.take_acks(&mut self.acks);
        let n = self.acks.len();
        self.acknowledged += n as u64;
        for point in self.acks.drain(..) {
            if let Some(r) = self.sources.get_mut(point.source as usize) {
                r.source.acknowledge(point.part, point.end);
            }
        }
        for r in &mut self.sources {
            r.source.settle();
        }
        n
    }

    /// Stops reading; waits for what is in flight, for at most `grace`.
    fn begin_drain(&mut self, grace: Option<Duration>) {
        if grace.is_some() {
            tracing::info!("shutting down: delivering what is in flight and saving checkpoints");
        }
        self.phase = Phase::Draining {
            until: grace.map(|g| Instant::now() + g),
        };
    }

    /// While draining: whether everything is delivered, or the time is up.
    /// A reload that keeps the sink waits for its acknowledgements without
    /// closing it.
    fn drained(&mut self) -> anyhow::Result<bool> {
        let Phase::Draining { until } = self.phase else {
            return Ok(false);
        };
        let keeps_sink = self
            .pending
            .as_ref()
            .is_some_and(|p| p.0.delivery.same_as(&self.plan.delivery));
        if keeps_sink {
            self.take_acks();
            if self.acknowledged >= self.pushed {
                return Ok(true);
            }
        } else {
            self.sink.close().context("delivering events")?;
            if self.sink.is_finished() {
                self.take_acks();
                return Ok(true);
            }
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            let then = match self.pending.is_some() {
                true => "read again after the reload",
                false => "sent again at the next start",
            };
            tracing::warn!(
                "gave up waiting for acknowledgements after {} ms; unacknowledged lines are {then}",
                self.shutdown_timeout.as_millis()
            );
            self.drain_incomplete = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads the configuration again and applies what changed (see the
    /// module's documentation). A configuration that does not load is
    /// reported, and the one in force stays.
    fn reload(&mut self) {
        if self.once {
            tracing::info!("SIGHUP ignored: --once reads the files it was given to their end");
            return;
        }
        let Some(reloader) = self.reloader.as_mut() else {
            return;
        };
        let plan = match reloader() {
            Ok(plan) => plan,
            Err(e) => {
                self.telemetry
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload: {e:#}; the configuration in force stays");
                return;
            }
        };
        let key = if plan.key == self.plan.key {
            self.key.clone()
        } else {
            match decide_key(&plan.key, self.wakes, &self.telemetry) {
                KeyDecision::Key(k) => Some(k),
                KeyDecision::Plain => None,
                KeyDecision::Stopped => {
                    self.end = End::Stopped;
                    self.begin_drain(Some(self.shutdown_timeout));
                    return;
                }
            }
        };
        if plan.metrics_addr != self.plan.metrics_addr {
            tracing::warn!("reload: metrics_addr changes at the next restart only");
        }
        self.telemetry.reloads.fetch_add(1, Ordering::Relaxed);
        let mut changed = Vec::new();
        if plan.tail != self.plan.tail {
            changed.push("the log files");
        }
        if plan.journal.as_ref().map(|j| &j.options)
            != self.plan.journal.as_ref().map(|j| &j.options)
        {
            changed.push("the journal selections");
        }
        if plan.state_dir != self.plan.state_dir {
            changed.push("state_dir");
        }
        if !plan.delivery.same_as(&self.plan.delivery) {
            changed.push("the delivery");
        }
        self.shutdown_timeout = plan.shutdown_timeout;
        self.status = Status::new(plan.status_interval, &self.telemetry);
        if changed.is_empty() {
            self.pipeline = pipeline_for(&plan, &key, &self.sources, &self.telemetry);
            self.plan = plan;
            self.key = key;
            tracing::info!(
                "configuration reloaded: patterns and event settings apply from the next line"
            );
            return;
        }
        tracing::info!(
            "reloading: {} changed; delivering what is in flight, then restarting in place",
            changed.join(", ")
        );
        self.pending = Some(Box::new((plan, key)));
        self.phase = Phase::Draining {
            until: Some(Instant::now() + self.shutdown_timeout),
        };
    }

    /// After a reload's drain: saves the checkpoints, and starts a new
    /// tailer (and sink, when the delivery changed or not everything was
    /// acknowledged) from `plan`. If the new plan cannot start, the old
    /// one starts again.
    fn restart(mut self, plan: Plan, key: Option<Secret>) -> anyhow::Result<Agent<'w>> {
        for r in &mut self.sources {
            r.source.settle();
        }
        self.save_checkpoints(true);
        self.pipeline.reporter().flush_suppressed();
        let keep_sink = !self.drain_incomplete && plan.delivery.same_as(&self.plan.delivery);
        let Agent {
            mut sink,
            wakes,
            telemetry,
            reloader,
            pushed,
            acknowledged,
            plan: old,
            key: old_key,
            sources,
            watcher,
            ..
        } = self;
        // The checkpoint store and the watches are the new tailer's now;
        // inputs handed in go on as they are.
        let inputs = handed_in(sources);
        drop(watcher);
        if !keep_sink {
            // What is still unacknowledged is read again from the
            // checkpoints just saved, and must not also reach the backend
            // from the old sender.
            sink.abort();
            drop(sink);
            sink = open_sink(&plan.delivery, wakes, &telemetry)?;
        }
        let mut next = match Agent::open(plan, key, sink, wakes, telemetry.clone(), inputs) {
            Ok(agent) => {
                tracing::info!("configuration reloaded");
                agent
            }
            Err((e, inputs)) => {
                telemetry.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "reload: cannot start with the new configuration: {e:#}; going back to the one in force"
                );
                let sink = open_sink(&old.delivery, wakes, &telemetry)?;
                Agent::open(old, old_key, sink, wakes, telemetry, inputs).map_err(|(e, _)| e)?
            }
        };
        next.reloader = reloader;
        next.acknowledged = acknowledged;
        next.pushed = if keep_sink { pushed } else { acknowledged };
        Ok(next)
    }

    /// Sleeps until something happens or something is due. While draining
    /// nothing is scanned: the loop waits for acknowledgements only.
    fn wait(&self) -> WakeSet {
        let mut timeout = match self.phase {
            Phase::Running => RESCAN_EVERY.saturating_sub(self.last_scan.elapsed()),
            Phase::Draining { .. } => SAVE_EVERY,
        };
        if self.positions_dirty()
            || self.sources.iter().any(|r| r.source.holds_back())
            || self.sink.is_full()
        {
            timeout = timeout.min(SAVE_EVERY);
        }
        if let Some(d) = self.sink.deadline() {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        if let Phase::Draining { until: Some(t) } = self.phase {
            timeout = timeout.min(t.saturating_duration_since(Instant::now()));
        }
        if let Some(t) = self.give_up_at {
            timeout = timeout.min(t.saturating_duration_since(Instant::now()));
        }
        if let Some(t) = self.status.due() {
            timeout = timeout.min(t.saturating_duration_since(Instant::now()));
        }
        self.wakes.wait(timeout)
    }

    /// Looks at the watched paths: at once when files were created,
    /// renamed or deleted (`structure`), else every [`RESCAN_EVERY`].
    fn scan(&mut self, structure: bool) -> anyhow::Result<()> {
        if !structure && self.last_scan.elapsed() < RESCAN_EVERY {
            return Ok(());
        }
        let why = match structure {
            true => Look::Changed,
            false => Look::Periodic,
        };
        for r in &mut self.sources {
            r.source.look(why)?;
        }
        if let Some(w) = &mut self.watcher {
            w.watch(&watch_dirs(&self.sources));
        }
        self.last_scan = Instant::now();
        Ok(())
    }

    fn save_checkpoints(&mut self, force: bool) {
        for r in &mut self.sources {
            if let Err(e) = r.source.save_positions(force) {
                tracing::error!("cannot save checkpoints: {e}");
            }
        }
    }

    /// Saves the checkpoints for the last time and says what was done.
    fn finish(&mut self) -> Report {
        if let Some(p) = self.progress.take() {
            p.finish(&self.telemetry);
        }
        for r in &mut self.sources {
            r.source.tick();
        }
        self.save_checkpoints(true);
        for (path, bytes) in self.sources.iter().flat_map(|r| r.source.partial_lines()) {
            tracing::info!(
                "{}: ends with an incomplete line ({bytes} bytes); it is read once its newline is written",
                path.display()
            );
        }
        let reporter = self.pipeline.reporter();
        reporter.flush_suppressed();
        let c = &reporter.counters;
        let report = Report {
            lines_read: Counters::get(&c.lines_read),
            events: Counters::get(&c.events),
            lines_failed: Counters::get(&c.lines_failed),
            lines_blank: Counters::get(&c.lines_blank),
            lines_truncated: Counters::get(&c.lines_truncated),
            metrics_invalid: Counters::get(&c.metrics_invalid),
            lines_unrecognised: Counters::get(&c.lines_unrecognised),
            read_errors: self.sources.iter().map(|r| r.source.read_errors()).sum(),
            files_unreadable: self.telemetry.tail.unreadable.load(Ordering::Relaxed),
            acknowledged: self.acknowledged,
            unacknowledged: self.pushed.saturating_sub(self.acknowledged),
            end: self.end,
        };
        tracing::info!(
            "done: {} lines read, {} events ({} acknowledged, {} not), {} failed, {} blank, {} cut at max_line_bytes, {} sent without their invalid metrics, {} skipped in files of unknown format, {} failed reads, {} files unreadable",
            report.lines_read,
            report.events,
            report.acknowledged,
            report.unacknowledged,
            report.lines_failed,
            report.lines_blank,
            report.lines_truncated,
            report.metrics_invalid,
            report.lines_unrecognised,
            report.read_errors,
            report.files_unreadable,
        );
        report
    }
}

/// The logs a plan names: its files' sources, then its journal
/// selections (the pipeline's log numbers, in that order).
fn plan_logs(plan: &Plan) -> usize {
    plan.sources.len() + plan.journal.as_ref().map_or(0, |j| j.formats.len())
}

/// The sources a plan opens: this is where each kind of input is
/// registered. Files: one tailer over every `--log` path and glob (its own
/// log number is the plan's source index). The journal: one reader over
/// every selection (numbered after the files).
fn open_sources(
    plan: &Plan,
    telemetry: &Telemetry,
    wakes: &Wakes,
) -> anyhow::Result<Vec<Registered>> {
    let checkpoints = match &plan.state_dir {
        None => CheckpointStore::disabled(),
        Some(dir) => CheckpointStore::open(dir).map_err(|e| {
            anyhow::anyhow!(
                "{e} (choose another folder with --state-dir, or run with --no-checkpoints)"
            )
        })?,
    };
    let mut tailer = Tailer::new(plan.tail.clone(), checkpoints);
    tailer.share_stats(telemetry.tail.clone());
    let mut sources = vec![Registered {
        source: Box::new(tailer),
        logs: (0..plan.sources.len()).collect(),
        handed_in: None,
    }];
    if let Some(journal) = &plan.journal {
        let first = plan.sources.len();
        sources.push(Registered {
            source: Box::new(JournalSource::new(
                journal.options.clone(),
                wakes.waker(),
                telemetry.journal.clone(),
            )),
            logs: (first..first + journal.formats.len()).collect(),
            handed_in: None,
        });
    }
    Ok(sources)
}

/// The inputs among `sources` that were handed in, to hand on to the
/// agent that replaces this one.
fn handed_in(sources: Vec<Registered>) -> Vec<Input> {
    sources
        .into_iter()
        .filter_map(|r| {
            r.handed_in.map(|formats| Input {
                source: r.source,
                formats,
            })
        })
        .collect()
}

/// The folders every source wants watched.
fn watch_dirs(sources: &[Registered]) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = sources.iter().flat_map(|r| r.source.watch_dirs()).collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The pipeline for a plan's patterns, sources and event options (and the
/// formats of the inputs handed in). The inputs there now get their format
/// at once: one whose format cannot be found is reported now (and costs
/// only itself).
fn pipeline_for(
    plan: &Plan,
    key: &Option<Secret>,
    sources: &[Registered],
    telemetry: &Telemetry,
) -> Pipeline {
    let formats = plan
        .sources
        .iter()
        .map(|s| s.pattern.clone())
        .chain(plan.journal.iter().flat_map(|j| j.formats.iter().cloned()))
        .chain(
            sources
                .iter()
                .filter_map(|r| r.handed_in.as_ref())
                .flatten()
                .cloned(),
        )
        .collect();
    let mut pipeline = Pipeline::new(
        plan.patterns.clone(),
        formats,
        plan.event.with_key(key.clone()),
        telemetry.lines.clone(),
    );
    for r in sources {
        r.source.origins(&mut |mut origin| {
            origin.log = r.logs.get(origin.log).copied().unwrap_or(usize::MAX);
            pipeline.choose_pattern(&origin);
        });
    }
    pipeline
}
