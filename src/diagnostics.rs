//! Counters and rate-limited messages about bad input.
//!
//! Bad input never stops the agent: a line that fails is counted and
//! reported with its file and line number, but at most [`BURST`] messages of
//! one kind go out per [`WINDOW`]; the rest are counted and summarised when
//! the window ends, so a log full of garbage cannot flood the journal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages of one kind allowed per window.
pub const BURST: u32 = 10;
/// The rate-limiting window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Why a line gave no event, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The line does not have the pattern's shape.
    NoMatch,
    /// A JSON pattern's line is not a JSON object.
    NotJson,
    /// The line was longer than `max_line_bytes`, and the cut line failed.
    TooLong,
    /// No request line, or one that is not `METHOD TARGET PROTOCOL`.
    BadRequest,
    /// The timestamp does not read as the pattern's format.
    BadTimestamp,
    /// The server's answer to a connection that sent no request (`""`,
    /// `-` or junk with a 4xx status): an ordinary line, counted apart.
    NotARequest,
    /// A line the format says is not an access line: the server's own
    /// message (uWSGI's startup lines, granian's `[INFO]`) or a WebSocket
    /// event (daphne's `WSCONNECT`), in a log it shares with requests.
    ServerMessage,
}

impl FailReason {
    pub const ALL: [FailReason; 7] = [
        FailReason::NoMatch,
        FailReason::NotJson,
        FailReason::TooLong,
        FailReason::BadRequest,
        FailReason::BadTimestamp,
        FailReason::NotARequest,
        FailReason::ServerMessage,
    ];

    /// A line that is no fault of the log: counted, logged at debug level,
    /// acknowledged like an event's line (not warned about).
    pub(crate) fn is_expected(self) -> bool {
        matches!(self, FailReason::NotARequest | FailReason::ServerMessage)
    }

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailReason::NoMatch => "no_match",
            FailReason::NotJson => "not_json",
            FailReason::TooLong => "too_long",
            FailReason::BadRequest => "bad_request",
            FailReason::BadTimestamp => "bad_timestamp",
            FailReason::NotARequest => "not_a_request",
            FailReason::ServerMessage => "server_message",
        }
    }
}

/// What happened to lines: for the final summary and the metrics (read by
/// another thread, hence atomics; the loop adds with relaxed ordering).
#[derive(Debug, Default)]
pub struct Counters {
    pub lines_read: AtomicU64,
    pub events: AtomicU64,
    pub lines_failed: AtomicU64,
    /// Failed lines by [`FailReason`], in the order of `FailReason::ALL`.
    pub failed_by_reason: [AtomicU64; FailReason::ALL.len()],
    pub lines_blank: AtomicU64,
    pub lines_truncated: AtomicU64,
    pub metrics_invalid: AtomicU64,
    /// Lines of files whose format is not known (skipped).
    pub lines_unrecognised: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a failed line.
    pub fn failed(&self, reason: FailReason) {
        Self::add(&self.lines_failed, 1);
        Self::add(&self.failed_by_reason[reason as usize], 1);
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    emitted: u32,
    suppressed: u64,
}

/// Emits warnings at a bounded rate per kind.
#[derive(Debug, Default)]
pub(crate) struct Reporter {
    pub counters: Arc<Counters>,
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl Reporter {
    /// A reporter counting into `counters` (shared with the metrics).
    pub(crate) fn with_counters(counters: Arc<Counters>) -> Self {
        Reporter {
            counters,
            windows: Mutex::default(),
        }
    }

    /// Logs `message` as a warning unless `kind` has used its burst in this
    /// window. Returns whether it was logged.
    pub fn warn(&self, kind: &'static str, message: impl FnOnce() -> String) -> bool {
        let now = Instant::now();
        let Ok(mut windows) = self.windows.lock() else {
            return false;
        };
        let w = windows.entry(kind).or_insert(Window {
            started: now,
            emitted: 0,
            suppressed: 0,
        });
        if now.duration_since(w.started) >= WINDOW {
            if w.suppressed > 0 {
                tracing::warn!(
                    "{} more {kind} messages were suppressed in the last {} s",
                    w.suppressed,
                    WINDOW.as_secs()
                );
            }
            *w = Window {
                started: now,
                emitted: 0,
                suppressed: 0,
            };
        }
        if w.emitted < BURST {
            w.emitted += 1;
            let suffix = if w.emitted == BURST {
                " (further messages of this kind are suppressed for a while)"
            } else {
                ""
            };
            tracing::warn!("{}{suffix}", message());
            true
        } else {
            w.suppressed += 1;
            false
        }
    }

    /// Says how many messages were held back, at shutdown.
    pub(crate) fn flush_suppressed(&self) {
        if let Ok(windows) = self.windows.lock() {
            for (kind, w) in windows.iter() {
                if w.suppressed > 0 {
                    tracing::warn!("{} more {kind} messages were suppressed", w.suppressed);
                }
            }
        }
    }
}

/// At most `max` characters of a line, for messages.
pub(crate) fn excerpt(line: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out.escape_debug().to_string()
}

/// The agent's text log on standard error, with control characters
/// escaped: messages carry text from outside (a backend's error message or
/// close reason, file names, fields of log lines), and a `\n` in one must
/// not write a line that looks like the agent's own. The formatter hands
/// over one event per write, ending in its newline, which is kept; other
/// line breaks and control characters become `\n`, `\r`, `\x1b`, ….
#[derive(Debug, Clone, Copy)]
pub struct EscapedStderr {
    /// Let ESC through: the formatter colours the level on a terminal.
    pub colours: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapedStderr {
    type Writer = Escaping<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping {
            inner: std::io::stderr(),
            colours: self.colours,
        }
    }
}

/// See [`EscapedStderr`].
#[derive(Debug)]
pub struct Escaping<W> {
    inner: W,
    colours: bool,
}

impl<W: std::io::Write> std::io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (buf, false),
        };
        let escape = |b: u8| (b < 0x20 && b != b'\t' && !(self.colours && b == 0x1b)) || b == 0x7f;
        if !body.iter().any(|&b| escape(b)) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b if escape(b) => {
                    let _ = std::io::Write::write_fmt(&mut out, format_args!("\\x{b:02x}"));
                }
                b => out.push(b),
            }
        }
        if newline {
            out.push(b'\n');
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod escaping_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_forged_line_stays_on_its_line() {
        let mut e = Escaping {
            inner: Vec::new(),
            colours: false,
        };
        e.write_all(b" WARN the backend refused batch 3: full\n ERROR forged\r\x1b[2K\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(e.inner).unwrap(),
            " WARN the backend refused batch 3: full\\n ERROR forged\\r\\x1b[2K\n"
        );
        let mut plain = Escaping {
            inner: Vec::new(),
            colours: true,
        };
        plain.write_all(b"\x1b[33m WARN\x1b[0m ok\tdone\n").unwrap();
        assert_eq!(plain.inner, b"\x1b[33m WARN\x1b[0m ok\tdone\n");
    }
}
