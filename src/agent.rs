//! The agent: wires tail → parse → pseudonymise → sink for each log file.
//!
//! [`LineHandler`] is the per-line path shared by the agent and `check`:
//! split with the file's pattern, build the event into a buffer, and count
//! and report what failed (rate-limited, naming file and line).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};

use crate::checkpoint::CheckpointStore;
use crate::config::{ConfigError, Secret, Settings};
use crate::diagnostics::{Counters, Reporter, excerpt};
use crate::event::{EventBuilder, EventOptions, LinePosition};
use crate::parse::detect::{self, SAMPLE_LINES};
use crate::parse::{Pattern, PatternSet, resolve_format};
use crate::secret_key;
use crate::send::{Sender, SenderConfig};
use crate::sink::{EventSink, StdoutSink, WebSocketSink};
use crate::tail::watch::{DirWatcher, Wake};
use crate::tail::{self, Delivery, Line, LineReader, TailOptions, TailedLine, Tailer};

/// What became of one line.
#[derive(Debug, PartialEq, Eq)]
pub enum LineOutcome {
    /// An event was appended to the buffer.
    Event,
    /// An event was appended, without a part that was bad.
    EventWithWarning(String),
    /// Nothing to send (a blank line).
    Blank,
    /// The line could not be turned into an event.
    Failed(String),
}

/// Turns lines of one pattern into events.
///
/// A detected pattern may have look-alikes: nginx's `combined`, Apache's
/// and gunicorn's default formats write the same line for most requests and
/// differ only in how they escape a quote or a non-ASCII byte, which the
/// first lines of a file need not show. A line the pattern refuses is tried
/// with the look-alikes, and the first that fits becomes the pattern from
/// then on ([`LineHandler::switched`] says so once), so such a line is not
/// lost to a detection made on plain lines.
#[derive(Debug)]
pub struct LineHandler {
    builder: EventBuilder,
    /// Patterns that fitted the detection sample as well, best first.
    alternatives: Vec<EventBuilder>,
    /// Set when a look-alike took over: (from, to) pattern names.
    switched: Option<(String, String)>,
}

impl LineHandler {
    pub fn new(pattern: Arc<Pattern>, options: &EventOptions) -> Self {
        Self::with_alternatives(pattern, Vec::new(), options)
    }

    /// A handler that falls back to `alternatives` (see the type's doc).
    pub fn with_alternatives(
        pattern: Arc<Pattern>,
        alternatives: Vec<Arc<Pattern>>,
        options: &EventOptions,
    ) -> Self {
        LineHandler {
            builder: EventBuilder::new(pattern, options),
            alternatives: alternatives
                .into_iter()
                .map(|p| EventBuilder::new(p, options))
                .collect(),
            switched: None,
        }
    }

    /// The look-alike switch made by the last [`LineHandler::handle`], if
    /// any: (from, to) pattern names.
    pub fn switched(&mut self) -> Option<(String, String)> {
        self.switched.take()
    }

    pub fn pattern(&self) -> &Arc<Pattern> {
        self.builder.pattern()
    }

    /// Appends the event for `line` to `out` (nothing on failure).
    pub fn handle(
        &mut self,
        line: &[u8],
        position: LinePosition,
        out: &mut Vec<u8>,
    ) -> LineOutcome {
        if line.iter().all(u8::is_ascii_whitespace) {
            return LineOutcome::Blank;
        }
        let outcome = build(&mut self.builder, line, position, out);
        if !matches!(outcome, LineOutcome::Failed(_)) {
            return outcome;
        }
        for k in 0..self.alternatives.len() {
            let alternative = build(&mut self.alternatives[k], line, position, out);
            if !matches!(alternative, LineOutcome::Failed(_)) {
                std::mem::swap(&mut self.builder, &mut self.alternatives[k]);
                self.switched = Some((
                    self.alternatives[k].pattern().name.clone(),
                    self.builder.pattern().name.clone(),
                ));
                return alternative;
            }
        }
        outcome
    }
}

/// One line through one pattern: split, then build the event.
#[inline]
fn build(
    builder: &mut EventBuilder,
    line: &[u8],
    position: LinePosition,
    out: &mut Vec<u8>,
) -> LineOutcome {
    let fields = match builder.pattern().split(line) {
        Ok(f) => f,
        Err(e) => return LineOutcome::Failed(e.to_string()),
    };
    match builder.build(&fields, position, out) {
        Ok(None) => LineOutcome::Event,
        Ok(Some(w)) => LineOutcome::EventWithWarning(w.0),
        Err(e) => LineOutcome::Failed(e.to_string()),
    }
}

/// Runs one line through `handler`, counting and reporting; the event (if
/// any) is left in `event`.
fn handle_line(
    path: &Path,
    stream: u64,
    handler: &mut LineHandler,
    line: &Line<'_>,
    reporter: &Reporter,
    event: &mut Vec<u8>,
) {
    let c = &reporter.counters;
    Counters::add(&c.lines_read, 1);
    if line.truncated {
        Counters::add(&c.lines_truncated, 1);
        reporter.warn("long line", || {
            format!(
                "{}:{}: line longer than max_line_bytes ({} bytes kept); the rest was skipped",
                path.display(),
                line.number,
                line.bytes.len()
            )
        });
    }
    let position = LinePosition {
        source: stream,
        offset: line.offset,
    };
    let outcome = handler.handle(line.bytes, position, event);
    if let Some((from, to)) = handler.switched() {
        tracing::warn!(
            "{}:{}: the line fits {to}, not {from} (detected from the first lines): reading the file as {to} from now on",
            path.display(),
            line.number
        );
    }
    match outcome {
        LineOutcome::Event => Counters::add(&c.events, 1),
        LineOutcome::EventWithWarning(w) => {
            Counters::add(&c.events, 1);
            Counters::add(&c.metrics_invalid, 1);
            reporter.warn("bad metrics", || {
                format!("{}:{}: {w}", path.display(), line.number)
            });
        }
        LineOutcome::Blank => Counters::add(&c.lines_blank, 1),
        LineOutcome::Failed(reason) => {
            Counters::add(&c.lines_failed, 1);
            reporter.warn("unparsed line", || {
                format!(
                    "{}:{}: {reason}: {}",
                    path.display(),
                    line.number,
                    excerpt(line.bytes, 160)
                )
            });
        }
    }
}

/// Reads up to [`SAMPLE_LINES`] lines from the start of `path`.
pub fn sample_lines(path: &Path, max_line: usize) -> io::Result<Vec<Vec<u8>>> {
    let file = File::open(path)?;
    let mut reader = LineReader::new(file.take(4 * 1024 * 1024), 0, max_line);
    let mut lines = Vec::new();
    while lines.len() < SAMPLE_LINES {
        match reader.next_line()? {
            Some(l) => lines.push(l.bytes.to_vec()),
            None => break,
        }
    }
    Ok(lines)
}

/// The pattern for `path` under the `format` setting, and the look-alikes
/// that fitted its first lines as well (see [`LineHandler`]).
pub fn pattern_for(
    set: &mut PatternSet,
    format: &str,
    path: &Path,
    max_line: usize,
) -> anyhow::Result<(Arc<Pattern>, Vec<Arc<Pattern>>)> {
    if format != "auto" {
        return resolve_format(set, format)
            .map(|p| (p, Vec::new()))
            .map_err(|e| ConfigError::new(e).into());
    }
    let lines =
        sample_lines(path, max_line).with_context(|| format!("reading {}", path.display()))?;
    match detect::detect(set, &lines) {
        Ok(d) => {
            if d.fitted < d.sampled {
                tracing::warn!(
                    "{}: {} of the first {} lines fit no pattern; they will be counted as failed",
                    path.display(),
                    d.sampled - d.fitted,
                    d.sampled
                );
            }
            if d.also_fitting.is_empty() {
                tracing::info!("{}: format detected: {}", path.display(), d.pattern.name);
            } else {
                tracing::info!(
                    "{}: format detected: {} (also fitting: {}; give --format to choose another)",
                    path.display(),
                    d.pattern.name,
                    d.also_fitting.join(", ")
                );
            }
            let alternatives = d.also_fitting.iter().filter_map(|n| set.get(n)).collect();
            Ok((d.pattern, alternatives))
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// How the agent runs, beyond the settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunMode {
    /// Read to the end of the files, deliver, and exit.
    pub once: bool,
    /// Neither resume from nor save checkpoints.
    pub no_checkpoints: bool,
}

/// Lines read per file before the loop delivers and acknowledges.
const POLL_BUDGET: usize = 8192;
/// How often the watched paths are scanned even without inotify events.
const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// How often changed checkpoints are saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Runs the agent until the files are read and delivered (`once`), or
/// until SIGTERM or SIGINT.
pub fn run(settings: &Settings, mode: RunMode) -> anyhow::Result<()> {
    if settings.log.is_empty() {
        return Err(ConfigError::new(
            "no log files given: use --log PATH (or `log` in the config file)",
        )
        .into());
    }
    let mut patterns = PatternSet::load(&settings.pattern_dirs)?;
    if settings.format != "auto" {
        // A bad --format is a configuration error, whatever the files hold.
        resolve_format(&mut patterns, &settings.format).map_err(ConfigError::new)?;
    }
    let checkpoints = if mode.no_checkpoints {
        CheckpointStore::disabled()
    } else {
        CheckpointStore::open(&settings.state_dir).map_err(|e| {
            anyhow::anyhow!(
                "{e} (choose another folder with --state-dir, or run with --no-checkpoints)"
            )
        })?
    };
    let (tx, rx) = mpsc::channel::<Wake>();
    spawn_signal_forwarder(tx.clone())?;

    // No IP is pseudonymised, and no event built, before the key decision.
    let mut options = settings.event_options();
    options.secret_key = match decide_secret_key(settings, &rx)? {
        KeyDecision::Key(key) => Some(key),
        KeyDecision::Plain => None,
        KeyDecision::Stopped => return Ok(()),
    };
    if options.secret_key.is_none() {
        tracing::warn!(
            "no secret_key configured: client IPs go out in plain text (set secret_key, or backend_url to fetch it)"
        );
    }
    let sink = make_sink(settings, tx.clone())?;

    let tail_options = TailOptions {
        logs: settings.log.clone(),
        from_beginning: settings.from_beginning || mode.once,
        max_line: settings.max_line_bytes,
        rotate_wait: if mode.once {
            Duration::ZERO
        } else {
            TailOptions::default().rotate_wait
        },
        ..TailOptions::default()
    };
    let mut tailer = Tailer::new(tail_options, checkpoints);
    let mut watcher = if mode.once {
        None
    } else {
        Some(DirWatcher::new(tx.clone()).context("starting the file watcher (inotify)")?)
    };
    tailer.scan()?;
    if let Some(w) = &mut watcher {
        for (dir, e) in w.watch(&tailer.watch_dirs()) {
            tracing::warn!(
                "cannot watch {} ({e}); relying on the periodic scan",
                dir.display()
            );
        }
    }

    let reporter = Reporter::new();
    let mut pipeline = Pipeline {
        patterns,
        format: settings.format.clone(),
        options,
        max_line: settings.max_line_bytes,
        handlers: HashMap::new(),
        sink,
        reporter: &reporter,
        event: Vec::with_capacity(1024),
        fatal: None,
    };
    // The files there now must have a known format: a wrong guess is an
    // error the operator sees at once, not a stream of failed lines.
    for value in &settings.log {
        for path in tail::discover::expand(value) {
            let has_lines = std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false);
            if has_lines {
                pipeline.choose_pattern(&path)?;
            }
        }
    }

    let grace = Duration::from_millis(settings.shutdown_timeout_ms);
    let mut phase = Phase::Running;
    let mut last_scan = Instant::now();
    let mut last_save = Instant::now();
    let mut acks = Vec::new();
    loop {
        // Whether a read ran and found the end of every file for now.
        let mut more = false;
        let mut read_to_end = false;
        if phase == Phase::Running && !pipeline.sink.is_full() {
            more = tailer
                .poll(POLL_BUDGET, &mut |line| pipeline.line(line))?
                .more;
            read_to_end = !more;
        }
        if let Some(e) = pipeline.fatal.take() {
            return quiet_on_broken_pipe(e);
        }
        if let Err(e) = pipeline.sink.flush(Instant::now(), false) {
            return quiet_on_broken_pipe(e.into());
        }
        pipeline.sink.take_acks(&mut acks);
        for (source, end) in acks.drain(..) {
            tailer.acknowledge(source, end);
        }
        tailer.update_checkpoints();
        if tailer.checkpoints_dirty() && last_save.elapsed() >= SAVE_EVERY {
            save_checkpoints(&mut tailer, false);
            last_save = Instant::now();
        }
        if phase == Phase::Running
            && mode.once
            && read_to_end
            && !tailer.has_rotated_files()
            && !pipeline.sink.is_full()
        {
            phase = Phase::Draining { until: None };
        }
        if let Phase::Draining { until } = phase {
            pipeline.sink.close()?;
            if pipeline.sink.is_finished() {
                pipeline.sink.take_acks(&mut acks);
                for (source, end) in acks.drain(..) {
                    tailer.acknowledge(source, end);
                }
                break;
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                tracing::warn!(
                    "shutdown: gave up waiting for acknowledgements after {} ms; unacknowledged lines are sent again at the next start",
                    grace.as_millis()
                );
                break;
            }
        }
        if more && phase == Phase::Running {
            continue;
        }
        // Nothing to read now: sleep until something happens. While
        // draining nothing is scanned: wait for acknowledgements only.
        let mut timeout = match phase {
            Phase::Running => RESCAN_EVERY.saturating_sub(last_scan.elapsed()),
            Phase::Draining { .. } => SAVE_EVERY,
        };
        if tailer.checkpoints_dirty() || tailer.has_rotated_files() || pipeline.sink.is_full() {
            timeout = timeout.min(SAVE_EVERY);
        }
        if let Some(d) = pipeline.sink.deadline() {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        if let Phase::Draining { until: Some(t) } = phase {
            timeout = timeout.min(t.saturating_duration_since(Instant::now()));
        }
        let mut scan = false;
        let mut stop = false;
        match rx.recv_timeout(timeout) {
            Ok(wake) => {
                let mut wakes = vec![wake];
                wakes.extend(rx.try_iter());
                scan = wakes.contains(&Wake::Structure);
                stop = wakes.contains(&Wake::Shutdown);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => stop = true,
        }
        if stop && phase != Phase::Running {
            // A second signal: stop waiting.
            break;
        }
        if stop {
            tracing::info!("shutting down: delivering what is in flight and saving checkpoints");
            phase = Phase::Draining {
                until: Some(Instant::now() + grace),
            };
        }
        if phase == Phase::Running && (scan || last_scan.elapsed() >= RESCAN_EVERY) {
            if scan {
                tailer.scan()?;
            } else {
                tailer.rescan()?;
            }
            if let Some(w) = &mut watcher {
                w.watch(&tailer.watch_dirs());
            }
            last_scan = Instant::now();
        }
    }
    tailer.update_checkpoints();
    save_checkpoints(&mut tailer, true);
    for (path, bytes) in tailer.partial_lines() {
        tracing::info!(
            "{}: ends with an incomplete line ({bytes} bytes); it is read once its newline is written",
            path.display()
        );
    }
    reporter.flush_suppressed();
    let c = &reporter.counters;
    tracing::info!(
        "done: {} lines read, {} events, {} failed",
        Counters::get(&c.lines_read),
        Counters::get(&c.events),
        Counters::get(&c.lines_failed)
    );
    Ok(())
}

/// Where the loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and delivering.
    Running,
    /// Not reading any more; waiting for what is in flight (until a time,
    /// at shutdown; for ever with `--once`).
    Draining { until: Option<Instant> },
}

fn quiet_on_broken_pipe(e: anyhow::Error) -> anyhow::Result<()> {
    // `cerberus-agent … | head` is not an error.
    let broken = e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken { Ok(()) } else { Err(e) }
}

/// Standard output, or the backend.
fn make_sink(settings: &Settings, wake: mpsc::Sender<Wake>) -> anyhow::Result<Box<dyn EventSink>> {
    let Some(url) = settings.ws_url.as_ref().filter(|_| !settings.stdout) else {
        if !settings.stdout {
            tracing::info!(
                "no ws_url configured: printing events to standard output as JSON lines"
            );
        }
        return Ok(Box::new(StdoutSink::new()));
    };
    if url.starts_with("ws://") {
        tracing::warn!(
            "ws_url uses unencrypted ws://: events and the token travel in clear text; use wss://"
        );
    }
    let tls = if url.starts_with("wss://") {
        if !settings.tls_verify {
            tracing::warn!(
                "tls_verify = false: the backend's certificate is NOT checked; anyone on the path can read and change what is sent"
            );
        }
        Some(crate::send::tls::client_config(
            settings.tls_ca_file.as_deref(),
            settings.tls_verify,
        )?)
    } else {
        None
    };
    let config = SenderConfig {
        url: url.clone(),
        token: settings.token.clone(),
        client_id: settings.client_id.clone(),
        wire: settings.wire,
        window: settings.window(),
        ack_timeout: Duration::from_millis(settings.ack_timeout_ms),
        ping_interval: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(10),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(30),
        tls,
    };
    let sender = Sender::spawn(config, wake).context("starting the sender thread")?;
    Ok(Box::new(WebSocketSink::new(
        settings.batch_limits(),
        sender,
    )))
}

/// What `remote_addr` will be.
enum KeyDecision {
    Key(Secret),
    /// Plain (normalised) IPs.
    Plain,
    /// A signal stopped the agent while it waited for the key.
    Stopped,
}

/// The key for `remote_addr`: configured, fetched from the backend, or
/// none (plain IPs).
fn decide_secret_key(
    settings: &Settings,
    wake: &mpsc::Receiver<Wake>,
) -> anyhow::Result<KeyDecision> {
    if let Some(k) = &settings.secret_key {
        return Ok(KeyDecision::Key(k.clone()));
    }
    let Some(url) = &settings.backend_url else {
        return Ok(KeyDecision::Plain);
    };
    if url.starts_with("http://") {
        tracing::warn!(
            "backend_url uses unencrypted http://: the secret key travels in clear text; use https://"
        );
    }
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match secret_key::fetch(url, settings.token.as_ref()) {
            Ok(key) => {
                tracing::info!("secret key fetched from the backend");
                return Ok(KeyDecision::Key(key));
            }
            Err(e) if !settings.wait_for_secret_key => {
                tracing::warn!(
                    "cannot fetch the secret key: {e}; sending client IPs in plain text (wait_for_secret_key = false)"
                );
                return Ok(KeyDecision::Plain);
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(60));
                tracing::warn!(
                    "cannot fetch the secret key: {e}; retrying in {} ms (no event is sent before the key is known)",
                    delay.as_millis()
                );
                match wake.recv_timeout(delay) {
                    Ok(Wake::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Ok(KeyDecision::Stopped);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn save_checkpoints(tailer: &mut Tailer, force: bool) {
    if let Err(e) = tailer.save_checkpoints(force) {
        tracing::error!("cannot save checkpoints: {e}");
    }
}

/// Forwards SIGTERM and SIGINT to the loop as [`Wake::Shutdown`].
fn spawn_signal_forwarder(tx: mpsc::Sender<Wake>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if tx.send(Wake::Shutdown).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// parse → pseudonymise → sink, for lines from the tailer.
struct Pipeline<'r> {
    patterns: PatternSet,
    format: String,
    options: EventOptions,
    max_line: usize,
    /// One handler per watched path, made when its first line arrives.
    handlers: HashMap<PathBuf, Option<LineHandler>>,
    sink: Box<dyn EventSink>,
    reporter: &'r Reporter,
    event: Vec<u8>,
    /// An error that must stop the agent (the sink failed).
    fatal: Option<anyhow::Error>,
}

impl Pipeline<'_> {
    /// Picks the pattern for the file at `path` (detecting it from the
    /// file's first lines with `--format auto`). On failure the path's lines
    /// are counted as failed from then on.
    fn choose_pattern(&mut self, path: &Path) -> anyhow::Result<()> {
        let chosen = pattern_for(&mut self.patterns, &self.format, path, self.max_line);
        let handler = chosen.as_ref().ok().map(|(p, alternatives)| {
            LineHandler::with_alternatives(p.clone(), alternatives.clone(), &self.options)
        });
        self.handlers.insert(path.to_owned(), handler);
        chosen.map(|_| ())
    }

    fn line(&mut self, tailed: TailedLine<'_>) -> Delivery {
        if self.fatal.is_some() {
            return Delivery::Pending;
        }
        if !self.handlers.contains_key(tailed.path)
            && let Err(e) = self.choose_pattern(tailed.path)
        {
            tracing::error!("{e:#}; its lines are counted as failed");
        }
        let Some(Some(handler)) = self.handlers.get_mut(tailed.path) else {
            Counters::add(&self.reporter.counters.lines_failed, 1);
            return Delivery::Done;
        };
        handle_line(
            tailed.path,
            tailed.stream,
            handler,
            &tailed.line,
            self.reporter,
            &mut self.event,
        );
        if self.event.is_empty() {
            return Delivery::Done;
        }
        if let Err(e) = self
            .sink
            .push(&self.event, (tailed.source, tailed.line.end))
        {
            self.fatal = Some(anyhow::Error::new(e).context("delivering events"));
        }
        self.event.clear();
        Delivery::Pending
    }
}
