//! The agent: wires tail → parse → pseudonymise → sink for each log file.
//!
//! [`LineHandler`] is the per-line path shared by the agent and `check`:
//! split with the file's pattern, build the event into a buffer, and count
//! and report what failed (rate-limited, naming file and line).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{ConfigError, Settings};
use crate::diagnostics::{Counters, Reporter, excerpt};
use crate::event::{BuildError, EventBuilder, EventOptions, LinePosition};
use crate::parse::detect::{self, DetectError, SAMPLE_LINES};
use crate::parse::{Pattern, PatternSet, SplitError, resolve_format};
use crate::sink::StdoutSink;
use crate::tail::{FileIdentity, Line, LineReader};

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
#[derive(Debug)]
pub struct LineHandler {
    builder: EventBuilder,
}

impl LineHandler {
    pub fn new(pattern: Arc<Pattern>, options: &EventOptions) -> Self {
        LineHandler {
            builder: EventBuilder::new(pattern, options),
        }
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
        let fields = match self.builder.pattern().split(line) {
            Ok(f) => f,
            Err(e @ SplitError::NoMatch(_)) | Err(e @ SplitError::NotJson(_)) => {
                return LineOutcome::Failed(e.to_string());
            }
        };
        match self.builder.build(&fields, position, out) {
            Ok(None) => LineOutcome::Event,
            Ok(Some(w)) => LineOutcome::EventWithWarning(w.0),
            Err(
                e @ (BuildError::NoRequest
                | BuildError::BadRequestLine(_)
                | BuildError::BadTimestamp(_)),
            ) => LineOutcome::Failed(e.to_string()),
        }
    }
}

/// One log file being read.
struct FileSource {
    path: PathBuf,
    reader: LineReader<File>,
    handler: LineHandler,
    source_id: u64,
}

impl FileSource {
    /// Reads every complete line available now; at the end of a `--once`
    /// run also the last line without newline. Returns lines read.
    fn pump(
        &mut self,
        sink: &mut StdoutSink,
        reporter: &Reporter,
        event: &mut Vec<u8>,
        final_read: bool,
    ) -> anyhow::Result<u64> {
        let mut n = 0;
        loop {
            let line = match self.reader.next_line() {
                Ok(Some(line)) => line,
                Ok(None) if final_read => match self.reader.take_partial() {
                    Some(line) => line,
                    None => break,
                },
                Ok(None) => break,
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {}", self.path.display()));
                }
            };
            n += 1;
            handle_line(
                &self.path,
                self.source_id,
                &mut self.handler,
                &line,
                reporter,
                event,
            );
            if !event.is_empty() {
                sink.write_event(event)
                    .context("writing to standard output")?;
                event.clear();
            }
        }
        Ok(n)
    }
}

/// Runs one line through `handler`, counting and reporting; the event (if
/// any) is left in `event`.
fn handle_line(
    path: &Path,
    source_id: u64,
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
        source: source_id,
        offset: line.offset,
    };
    match handler.handle(line.bytes, position, event) {
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

/// Expands `--log` values: globs to the files they match now, plain paths
/// as they are.
pub fn expand_logs(logs: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for log in logs {
        if log.contains(['*', '?', '[']) {
            let matches =
                glob::glob(log).with_context(|| format!("--log {log:?} is not a valid glob"))?;
            let mut found: Vec<PathBuf> = matches
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            paths.extend(found);
        } else {
            paths.push(PathBuf::from(log));
        }
    }
    paths.dedup();
    Ok(paths)
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

/// The pattern for `path` under the `format` setting.
pub fn pattern_for(
    set: &mut PatternSet,
    format: &str,
    path: &Path,
    max_line: usize,
) -> anyhow::Result<Arc<Pattern>> {
    if format != "auto" {
        return resolve_format(set, format).map_err(|e| ConfigError::new(e).into());
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
            Ok(d.pattern)
        }
        Err(e @ DetectError::NoLines) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Runs the agent until the files are read (`once`) or forever.
pub fn run(settings: &Settings, once: bool) -> anyhow::Result<()> {
    if settings.log.is_empty() {
        return Err(ConfigError::new(
            "no log files given: use --log PATH (or `log` in the config file)",
        )
        .into());
    }
    if settings.ws_url.is_some() && !settings.stdout {
        bail!("this build cannot send over WebSocket yet; run with --stdout");
    }
    if settings.ws_url.is_none() && !settings.stdout {
        tracing::info!("no ws_url configured: printing events to standard output as JSON lines");
    }
    let options = settings.event_options();
    if options.secret_key.is_none() {
        tracing::warn!(
            "no secret_key configured: client IPs go out in plain text (set secret_key, or backend_url to fetch it)"
        );
    }
    let mut patterns = PatternSet::load(&settings.pattern_dirs)?;
    let reporter = Reporter::new();
    let mut sink = StdoutSink::new();
    let mut sources = Vec::new();
    for path in expand_logs(&settings.log)? {
        let pattern = pattern_for(
            &mut patterns,
            &settings.format,
            &path,
            settings.max_line_bytes,
        )?;
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let identity =
            FileIdentity::of(&mut file).with_context(|| format!("reading {}", path.display()))?;
        let start = if once || settings.from_beginning {
            0
        } else {
            file.metadata().map(|m| m.len()).unwrap_or(0)
        };
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
        sources.push(FileSource {
            reader: LineReader::new(file, start, settings.max_line_bytes),
            handler: LineHandler::new(pattern, &options),
            source_id: identity.source_id(),
            path,
        });
    }
    let mut event = Vec::with_capacity(1024);
    loop {
        let mut read = 0;
        for source in &mut sources {
            read += source.pump(&mut sink, &reporter, &mut event, once)?;
        }
        if let Err(e) = sink.flush() {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("writing to standard output");
        }
        if once {
            break;
        }
        if read == 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
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
