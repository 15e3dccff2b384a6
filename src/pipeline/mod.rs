//! Pipeline: the per-line stage, parse → pseudonymise → event.
//!
//! [`LineHandler`] turns one file's lines into events with its pattern:
//! split, build the event (hashing the client IP) into a buffer, and say
//! what failed. [`Pipeline`] keeps a handler per watched path, choosing
//! each path's pattern when its first line arrives (detecting it from the
//! file's first lines with `--format auto`, see [`detect`]), and counts and
//! reports bad lines (rate-limited, naming file and line). The agent and
//! `check` both use it, so what `check` shows is what the agent sends.

pub mod detect;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostics::{Counters, FailReason, Reporter};
use crate::event::{
    BuildError, EventBuilder, EventOptions, LinePosition, SharedPseudonymiser, shared_pseudonymiser,
};
use crate::parse::{Pattern, PatternSet, SplitError};
use crate::source::{Line, Origin, SourceLine};
use detect::MAX_SAMPLE_LINES;

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
    Failed(Failure),
}

impl LineOutcome {
    /// The line gave no event for a fault: not a blank line, nor a line of
    /// the format that records no request (`not_a_request`), nor one of the
    /// server's own messages (`server_message`).
    pub(crate) fn is_failure(&self) -> bool {
        matches!(self, LineOutcome::Failed(f) if !f.reason.is_expected())
    }
}

/// Why a line gave no event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailReason,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
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
        Self::with_alternatives(pattern, Vec::new(), options, shared_pseudonymiser(options))
    }

    /// A handler that falls back to `alternatives` (see the type's doc),
    /// hashing addresses with `ips`.
    pub(crate) fn with_alternatives(
        pattern: Arc<Pattern>,
        alternatives: Vec<Arc<Pattern>>,
        options: &EventOptions,
        ips: SharedPseudonymiser,
    ) -> Self {
        LineHandler {
            builder: EventBuilder::sharing(pattern, options, ips.clone()),
            alternatives: alternatives
                .into_iter()
                .map(|p| EventBuilder::sharing(p, options, ips.clone()))
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
        if !outcome.is_failure() {
            return outcome;
        }
        for k in 0..self.alternatives.len() {
            let alternative = build(&mut self.alternatives[k], line, position, out);
            if !alternative.is_failure() {
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
    if !builder.pattern().is_access_line(line) {
        return LineOutcome::Failed(Failure {
            reason: FailReason::ServerMessage,
            message: format!(
                "not an access line: {}'s own message",
                builder.pattern().name
            ),
        });
    }
    let fields = match builder.pattern().split(line) {
        Ok(f) => f,
        Err(e) => {
            let reason = match e {
                SplitError::NoMatch(_) => FailReason::NoMatch,
                SplitError::NotJson(_) => FailReason::NotJson,
            };
            let message = e.to_string();
            return LineOutcome::Failed(Failure { reason, message });
        }
    };
    match builder.build(&fields, position, out) {
        Ok(None) => LineOutcome::Event,
        Ok(Some(w)) => LineOutcome::EventWithWarning(w.0),
        Err(e) => {
            let reason = match e {
                BuildError::BadTimestamp(_) => FailReason::BadTimestamp,
                BuildError::NoRequest | BuildError::BadRequestLine(_) => FailReason::BadRequest,
                BuildError::NotARequest(_) => FailReason::NotARequest,
                BuildError::NotAnAddress(_) => FailReason::NoMatch,
            };
            let message = e.to_string();
            LineOutcome::Failed(Failure { reason, message })
        }
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
        stream,
        offset: line.offset,
        time: line.time,
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
        LineOutcome::Failed(reason) if reason.reason.is_expected() => {
            c.failed(reason.reason);
            tracing::debug!("{}:{}: {}", path.display(), line.number, reason.message);
        }
        LineOutcome::Failed(reason) => {
            c.failed(if line.truncated {
                FailReason::TooLong
            } else {
                reason.reason
            });
            // The line is named, not shown: a log may hold anything
            // (`cerberus-agent check` shows it to whoever looks).
            reporter.warn("unparsed line", || {
                format!(
                    "{}:{}: {reason} ({} bytes; `cerberus-agent check` shows the line)",
                    path.display(),
                    line.number,
                    line.bytes.len()
                )
            });
        }
    }
}

/// Says which format was detected for `path`, and how well it fits.
fn report_detection(path: &Path, d: &detect::Detection) {
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
}

/// What the pipeline knows of a watched path.
#[derive(Debug)]
enum PathState {
    /// Its pattern is chosen.
    Reading(Box<LineHandler>),
    /// No pattern fits its first lines (an error log, a format no pattern
    /// describes, too few lines yet): its lines are skipped, and detection
    /// is tried again when the file grew past a short sample, or when new
    /// content starts at its beginning (after a rotation).
    Undetected {
        sampled_lines: usize,
        sampled_to: u64,
        /// What was said of it last (not said again when a retry finds
        /// the same).
        said: String,
    },
}

/// Lines from the tailer into events: one [`LineHandler`] per watched path.
#[derive(Debug)]
pub(crate) struct Pipeline {
    patterns: PatternSet,
    /// Per configured log (the index a line's [`Origin::log`] gives, as the
    /// agent maps it to the plan's),
    /// its fixed pattern, or `None` to detect each file's.
    formats: Vec<Option<Arc<Pattern>>>,
    options: EventOptions,
    /// Per watched path, made when its first line arrives.
    handlers: HashMap<PathBuf, PathState>,
    /// The address hashes, shared by every path's handler.
    ips: SharedPseudonymiser,
    reporter: Reporter,
    event: Vec<u8>,
}

impl Pipeline {
    /// `counters` are where lines are counted (shared with the metrics).
    pub fn new(
        patterns: PatternSet,
        formats: Vec<Option<Arc<Pattern>>>,
        options: EventOptions,
        counters: Arc<Counters>,
    ) -> Self {
        Pipeline {
            patterns,
            formats,
            ips: shared_pseudonymiser(&options),
            options,
            handlers: HashMap::new(),
            reporter: Reporter::with_counters(counters),
            event: Vec::with_capacity(1024),
        }
    }

    /// What was counted so far, and the rate limits of messages.
    pub(crate) fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// Picks the pattern for `file`: the one its configured log names, or
    /// the one detected from its first lines. When none fits, says so
    /// (naming the file, and whether it is an error log) and returns false:
    /// the path's lines are skipped until a later try finds one.
    pub(crate) fn choose_pattern(&mut self, file: &Origin<'_>) -> bool {
        let path = file.name;
        if let Some(p) = self.formats.get(file.log).cloned().flatten() {
            let handler =
                LineHandler::with_alternatives(p, Vec::new(), &self.options, self.ips.clone());
            self.handlers
                .insert(path.to_owned(), PathState::Reading(Box::new(handler)));
            return true;
        }
        let (lines, sampled_to) = match file.first_lines(MAX_SAMPLE_LINES) {
            Ok(sample) => sample,
            Err(e) => {
                tracing::error!(
                    "{}: cannot read its first lines to detect its format: {e}",
                    path.display()
                );
                (Vec::new(), 0)
            }
        };
        match detect::detect(&self.patterns, &lines) {
            Ok(d) => {
                report_detection(path, &d);
                let alternatives = d
                    .also_fitting
                    .iter()
                    .filter_map(|n| self.patterns.get(n))
                    .collect();
                let handler = LineHandler::with_alternatives(
                    d.pattern,
                    alternatives,
                    &self.options,
                    self.ips.clone(),
                );
                self.handlers
                    .insert(path.to_owned(), PathState::Reading(Box::new(handler)));
                true
            }
            Err(e) => {
                let said = e.to_string();
                let said_before = match self.handlers.get(path) {
                    Some(PathState::Undetected { said: before, .. }) => *before == said,
                    _ => false,
                };
                if e.is_waiting() {
                    if !lines.is_empty() && !said_before {
                        tracing::info!("{}: {said}", path.display());
                    }
                } else if !lines.is_empty() && !said_before {
                    tracing::error!(
                        "{}: {said}\nIts lines are skipped (and counted) until a format fits; give it one with --log PATH=FORMAT, or leave it out with --exclude",
                        path.display()
                    );
                }
                let state = PathState::Undetected {
                    sampled_lines: lines.len(),
                    sampled_to,
                    said,
                };
                self.handlers.insert(path.to_owned(), state);
                false
            }
        }
    }

    /// Turns a tailed line into its event, if it has one.
    pub fn line(&mut self, tailed: &SourceLine<'_>) -> Option<&[u8]> {
        self.event.clear();
        // The usual line: one lookup of its path, and its pattern reads it.
        if !self.read_with_pattern(tailed) {
            let line = &tailed.line;
            let retry = match self.handlers.get(tailed.origin.name) {
                Some(PathState::Undetected {
                    sampled_lines,
                    sampled_to,
                    ..
                }) => {
                    line.offset == 0
                        || (*sampled_lines < MAX_SAMPLE_LINES && line.end > *sampled_to)
                }
                _ => true,
            };
            if !(retry && self.choose_pattern(&tailed.origin) && self.read_with_pattern(tailed)) {
                Counters::add(&self.reporter.counters.lines_unrecognised, 1);
                return None;
            }
        }
        if self.event.is_empty() {
            return None;
        }
        let extra = tailed.origin.extra;
        if !extra.is_empty() && self.event.last() == Some(&b'}') {
            // What the source says of the line's origin (a container's
            // metadata) goes in as members of the event's object.
            self.event.pop();
            self.event.extend_from_slice(extra);
            self.event.push(b'}');
        }
        Some(self.event.as_slice())
    }

    /// Runs the line through its path's pattern; false when the path has
    /// none (yet).
    fn read_with_pattern(&mut self, tailed: &SourceLine<'_>) -> bool {
        let Some(PathState::Reading(handler)) = self.handlers.get_mut(tailed.origin.name) else {
            return false;
        };
        handle_line(
            tailed.origin.name,
            tailed.stream,
            handler,
            &tailed.line,
            &self.reporter,
            &mut self.event,
        );
        true
    }
}
