//! `--format auto`: find the pattern that fits a file's first lines.
//!
//! Every pattern is tried on the sample; the one that turns the most
//! non-blank sample lines into events wins, ties going to the lower
//! `detect_priority`. Stricter patterns come first (nginx's escaped values
//! before gunicorn's raw ones), so a file gets the most specific format that
//! explains it. Real logs hold lines no format explains (nginx logs a
//! scanner's malformed request with an empty URI), so the winner need not fit
//! every line, but at least [`MIN_FIT_PERCENT`] of them.

use std::sync::Arc;

use crate::event::{EventBuilder, EventOptions, LinePosition};
use crate::parse::{Pattern, PatternSet};

/// How many lines from the start of a file are used to detect its format.
pub(crate) const SAMPLE_LINES: usize = 20;

/// How many lines are read for a sample: a pattern whose server writes its
/// own messages to the log too (uWSGI's 40 startup lines) is judged on the
/// first [`SAMPLE_LINES`] of its access lines among these.
pub(crate) const MAX_SAMPLE_LINES: usize = 200;

/// The share of sample lines the detected pattern must fit.
pub(crate) const MIN_FIT_PERCENT: usize = 80;

/// The detected pattern, and the others that would also have fitted.
#[derive(Debug)]
pub struct Detection {
    pub pattern: Arc<Pattern>,
    /// Other patterns that fit as many lines.
    pub also_fitting: Vec<String>,
    /// Sample lines the pattern fits, of `sampled`.
    pub fitted: usize,
    pub sampled: usize,
}

/// Why no pattern was chosen.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("no lines to detect the format from")]
    NoLines,
    // The messages name lines, never show them: a file a glob took in may
    // hold anything (`cerberus-agent check FILE` shows them to whoever
    // chose to look).
    #[error(
        "this is {0}'s error log, not an access log (line {line_number} has its shape)",
        server
    )]
    ErrorLog {
        server: &'static str,
        line_number: usize,
    },
    #[error(
        "no pattern fits {MIN_FIT_PERCENT}% of the first lines (line {line_number}, {bytes} bytes, fits none); run `cerberus-agent check FILE` to see why each line fails, or give --format"
    )]
    NoneFits { line_number: usize, bytes: usize },
    #[error(
        "its lines so far look like {0}'s own messages, with no request yet; detection is tried again as lines come"
    )]
    NoRequestYet(String),
}

impl DetectError {
    /// Whether this is the normal state of a log that has no request yet
    /// (not worth an error).
    pub fn is_waiting(&self) -> bool {
        matches!(self, DetectError::NoLines | DetectError::NoRequestYet(..))
    }
}

/// True when `pattern` turns `line` into an event, or reads it as the
/// server's answer to a connection that sent no request.
pub fn fits(pattern: &Arc<Pattern>, line: &[u8]) -> bool {
    pattern.is_access_line(line) && fits_access_line(pattern, line)
}

fn fits_access_line(pattern: &Arc<Pattern>, line: &[u8]) -> bool {
    let mut builder = EventBuilder::new(pattern.clone(), &EventOptions::default());
    let mut scratch = Vec::new();
    pattern.split(line).ok().is_some_and(|f| {
        let built = builder.build(
            &f,
            LinePosition {
                stream: 0,
                offset: 0,
                time: None,
            },
            &mut scratch,
        );
        matches!(built, Ok(_) | Err(crate::event::BuildError::NotARequest(_)))
    })
}

/// Picks the pattern for `lines` (blank lines are ignored).
pub fn detect(set: &PatternSet, lines: &[Vec<u8>]) -> Result<Detection, DetectError> {
    let sample: Vec<(usize, &[u8])> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| (i + 1, l.as_slice()))
        .collect();
    if sample.is_empty() {
        return Err(DetectError::NoLines);
    }
    // Each pattern is judged on its first SAMPLE_LINES access lines: the
    // server's own messages its log holds too are passed over.
    let scores: Vec<(usize, usize, &Arc<Pattern>)> = set
        .iter()
        .map(|p| {
            let judged: Vec<&[u8]> = sample
                .iter()
                .map(|(_, l)| *l)
                .filter(|l| p.is_access_line(l))
                .take(SAMPLE_LINES)
                .collect();
            let fitted = judged.iter().filter(|l| fits_access_line(p, l)).count();
            (fitted, judged.len(), p)
        })
        .collect();
    // Those that fit enough of what they judged; the most lines wins.
    let scores: Vec<&(usize, usize, &Arc<Pattern>)> = scores
        .iter()
        .filter(|(n, judged, _)| *n > 0 && *n * 100 >= judged * MIN_FIT_PERCENT)
        .collect();
    let best = scores.iter().map(|(n, _, _)| *n).max().unwrap_or(0);
    // `set.iter()` is in priority order, so the first best is the winner.
    let mut winners = scores.iter().filter(|(n, _, _)| *n == best);
    match winners.next() {
        Some((_, judged, first)) => Ok(Detection {
            pattern: (*first).clone(),
            also_fitting: winners.map(|(_, _, p)| p.name.clone()).collect(),
            fitted: best,
            sampled: *judged,
        }),
        None if let Some(p) = set.iter().find(|p| {
            sample.iter().all(|(_, l)| !p.is_access_line(l))
                && sample.iter().any(|(_, l)| p.is_server_message(l))
        }) =>
        {
            Err(DetectError::NoRequestYet(p.name.clone()))
        }
        None if error_log(&sample).is_some() => {
            let (server, (line_number, _)) = error_log(&sample).unwrap_or(("a server", sample[0]));
            Err(DetectError::ErrorLog {
                server,
                line_number,
            })
        }
        None => {
            // Name the first line that no pattern fits at all, or else the
            // first line.
            let (line_number, line) = sample
                .iter()
                .find(|(_, l)| !set.iter().any(|p| fits(p, l)))
                .unwrap_or(&sample[0]);
            Err(DetectError::NoneFits {
                line_number: *line_number,
                bytes: line.len(),
            })
        }
    }
}

/// The error-log line shapes of the servers whose access logs the agent
/// reads: a glob like `/var/log/nginx/*.log` takes their error logs too.
const ERROR_LOGS: &[(&str, &str)] = &[
    // 2026/11/25 10:04:05 [error] 1234#1234: *5 open() failed …
    (
        "nginx",
        r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} \[(emerg|alert|crit|error|warn|notice|info|debug)\] \d+#\d+: ",
    ),
    // [Wed Nov 25 10:04:05.123456 2026] [core:error] [pid 1234:tid 5678] …
    (
        "Apache",
        r"^\[\w{3} \w{3} [ \d]\d \d{2}:\d{2}:\d{2}(\.\d+)? \d{4}\] \[(\w+:)?\w+\] ",
    ),
    // [2026-11-25 10:04:05 +0000] [1234] [INFO] Starting gunicorn 23.0.0
    (
        "gunicorn",
        r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}\] \[\d+\] \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] ",
    ),
];

/// The server whose error log most of the `sample` lines look like, with
/// the first such line.
fn error_log<'s>(sample: &[(usize, &'s [u8])]) -> Option<(&'static str, (usize, &'s [u8]))> {
    static SHAPES: std::sync::LazyLock<Vec<(&str, regex::bytes::Regex)>> =
        std::sync::LazyLock::new(|| {
            ERROR_LOGS
                .iter()
                .filter_map(|(server, re)| regex::bytes::Regex::new(re).ok().map(|r| (*server, r)))
                .collect()
        });
    SHAPES.iter().find_map(|(server, shape)| {
        let matching: Vec<&(usize, &[u8])> =
            sample.iter().filter(|(_, l)| shape.is_match(l)).collect();
        (matching.len() * 2 > sample.len()).then(|| (*server, *matching[0]))
    })
}
