//! Journal: access lines that servers write to the systemd journal
//! (`gunicorn --access-logfile -` under a unit, uWSGI, uvicorn, nginx's
//! `access_log syslog:`), as a [`Source`] beside the file tailer.
//!
//! A [`JournalSource`] runs one `journalctl --output=json --follow`
//! ([`reader`]) over its selections (units by `_SYSTEMD_UNIT`, programs by
//! `SYSLOG_IDENTIFIER`), restarted with back-off when it dies and stopped
//! with the agent. Each entry of a selection is a line: its origin is
//! named `journal:<unit or identifier>` (the format is detected per
//! selection from its first messages), its `event_id` is the entry's
//! sequence id and number (the same each time the entry is read), and its
//! time is the entry's when the access line has none.
//!
//! Position: the cursor of the entry below which everything is
//! acknowledged, saved in the state folder ([`cursor`]) and moved only by
//! acknowledgements. Without a checkpoint reading starts with the entries
//! written from now on (`--from-beginning`: the oldest). A saved cursor
//! that vacuuming removed is reported once, with how many entries may
//! have been missed, and counted; reading goes on from the oldest entry.
//! docs/sources.md says why a subprocess rather than a journal crate.

pub mod cursor;
pub mod reader;

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::source::{Handling, Head, Line, Look, Origin, PollOutcome, Source, SourceLine};
use crate::wake::Waker;
use cursor::{Cursor, CursorFile};
use reader::{Entry, Query, Reader, Received, Start};

/// Which entries a selection takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// `_SYSTEMD_UNIT`: a service's output (`gunicorn.service`).
    Unit(String),
    /// `SYSLOG_IDENTIFIER`: a program's (`nginx` logging to syslog).
    Identifier(String),
}

impl Selection {
    /// The journalctl match.
    fn matching(&self) -> String {
        match self {
            Selection::Unit(u) => format!("_SYSTEMD_UNIT={u}"),
            Selection::Identifier(i) => format!("SYSLOG_IDENTIFIER={i}"),
        }
    }

    fn takes(&self, e: &Entry) -> bool {
        match self {
            Selection::Unit(u) => e.unit.as_deref() == Some(u.as_str()),
            Selection::Identifier(i) => e.identifier.as_deref() == Some(i.as_str()),
        }
    }

    /// What messages call its lines.
    pub fn name(&self) -> String {
        match self {
            Selection::Unit(u) | Selection::Identifier(u) => format!("journal:{u}"),
        }
    }
}

/// How a journal source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// In order: an entry belongs to the first that takes it.
    pub selections: Vec<Selection>,
    /// A journal folder that is not the system's.
    pub directory: Option<PathBuf>,
    /// Without a checkpoint: from the oldest entry, not from now.
    pub from_beginning: bool,
    /// Where the cursor is kept; `None` with `--no-checkpoints`.
    pub state_dir: Option<PathBuf>,
    /// The `journalctl` to run.
    pub program: PathBuf,
    /// Longest message kept whole (`max_line_bytes`).
    pub max_line: usize,
    /// `--once`: read what the journal holds now, and end.
    pub once: bool,
}

/// What the journal source counts, for the metrics.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Entries read (all selections).
    pub entries: AtomicU64,
    /// Saved positions found vacuumed away at start.
    pub cursors_lost: AtomicU64,
    /// Times journalctl ended and was started again.
    pub restarts: AtomicU64,
}

/// The first messages of a selection, for format detection.
#[derive(Debug, Default)]
struct Sample {
    lines: Vec<Vec<u8>>,
    bytes: usize,
    /// The number (`Line::end`) after the last sampled entry.
    end: u64,
}

/// Messages sampled per selection, at most (as many as detection reads),
/// and their bytes.
const SAMPLE_LINES: usize = 200;
const SAMPLE_BYTES: usize = 1 << 20;

impl Head for Sample {
    fn first_lines(&self, max_lines: usize) -> io::Result<(Vec<Vec<u8>>, u64)> {
        let lines: Vec<Vec<u8>> = self.lines.iter().take(max_lines).cloned().collect();
        Ok((lines, self.end))
    }
}

/// An entry handed on and not acknowledged: its number, and the cursor
/// everything before it reaches.
#[derive(Debug)]
struct InFlight {
    end: u64,
    before: Option<Cursor>,
}

/// Unusable entries are said at most this often.
const SKIPPED_SAID_EVERY: Duration = Duration::from_secs(60);

/// Back-off between restarts of journalctl.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// The journal as a source.
pub struct JournalSource {
    options: JournalOptions,
    names: Vec<PathBuf>,
    samples: Vec<Sample>,
    reader: Option<Reader>,
    waker: Waker,
    file: CursorFile,
    /// The cursor of the last entry handed on (journalctl restarts after
    /// it).
    read: Option<Cursor>,
    in_flight: VecDeque<InFlight>,
    /// Lines numbered from 1 in this run (what acknowledgements name).
    next_end: u64,
    saved: Option<Cursor>,
    /// With `once`: journalctl read the journal to its end.
    finished: bool,
    /// The saved position was vacuumed: read from the oldest entry.
    start_over: bool,
    /// Entries that could not be used, and when that was last said.
    skipped: u64,
    skipped_said: Option<Instant>,
    retry_at: Option<Instant>,
    retry_wait: Duration,
    started: bool,
    stats: Arc<JournalStats>,
}

impl std::fmt::Debug for JournalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalSource")
            .field("selections", &self.options.selections)
            .finish_non_exhaustive()
    }
}

impl JournalSource {
    /// A source over `options`; `waker` wakes the agent's loop when
    /// entries arrive. journalctl starts at the first look.
    pub fn new(options: JournalOptions, waker: Waker, stats: Arc<JournalStats>) -> Self {
        let key = match &options.directory {
            None => "system".to_owned(),
            Some(d) => d.display().to_string(),
        };
        let file = CursorFile::new(options.state_dir.as_deref(), &key);
        let saved = file.load();
        JournalSource {
            names: options.selections.iter().map(|s| s.name().into()).collect(),
            samples: options
                .selections
                .iter()
                .map(|_| Sample::default())
                .collect(),
            options,
            reader: None,
            waker,
            file,
            read: saved.clone(),
            in_flight: VecDeque::new(),
            next_end: 1,
            saved,
            finished: false,
            start_over: false,
            skipped: 0,
            skipped_said: None,
            retry_at: None,
            retry_wait: FIRST_RETRY,
            started: false,
            stats,
        }
    }

    fn query(&self, start: Start) -> Query {
        Query {
            program: self.options.program.clone(),
            directory: self.options.directory.clone(),
            matches: self
                .options
                .selections
                .iter()
                .map(Selection::matching)
                .collect(),
            start,
        }
    }

    /// Where the next journalctl starts: after the last entry read, or
    /// (the first time) after the checkpoint, or now / the oldest.
    fn start(&self) -> Start {
        match (&self.read, self.options.from_beginning || self.start_over) {
            (Some(c), _) => Start::After(c.text.clone()),
            (None, true) => Start::Beginning,
            (None, false) => Start::Now,
        }
    }

    /// At the first start with a checkpoint: is its entry still there?
    /// Says once how much may have been missed if not, and returns true.
    fn check_vacuum(&self, saved: &Cursor) -> bool {
        let mut q = self.query(Start::Beginning);
        // The oldest entry of the whole journal, whatever its unit.
        q.matches.clear();
        let first = match first_entry(&q) {
            Ok(Some(e)) => e,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!("cannot look at the journal's oldest entry: {e}");
                return false;
            }
        };
        let Some(oldest) = Cursor::parse(&first.cursor) else {
            return false;
        };
        let gone = match oldest.seqnum_id == saved.seqnum_id {
            true if oldest.seqnum > saved.seqnum + 1 => Some(oldest.seqnum - saved.seqnum - 1),
            true => None,
            // Another sequence: the saved one is gone altogether, unless a
            // later file holds it (journalctl then resumes there).
            false => match cursor_exists(&self.query(Start::Beginning), saved) {
                true => None,
                false => Some(0),
            },
        };
        let Some(gone) = gone else { return false };
        self.stats.cursors_lost.fetch_add(1, Ordering::Relaxed);
        let how_many = match gone {
            0 => "an unknown number of entries".to_owned(),
            n => format!("up to {n} entries (of every unit)"),
        };
        tracing::warn!(
            "the journal no longer holds the saved position (vacuumed while the agent was stopped): {how_many} may have been missed; reading on from the oldest entry"
        );
        true
    }

    /// "From now on", made exact: the newest entry at the agent's start is
    /// where reading begins (after it), so that an entry written once the
    /// agent said it is ready is read, however late journalctl gets to the
    /// journal's end. An empty journal is read from its beginning.
    fn mark_now(&mut self) {
        let mut q = self.query(Start::Newest);
        q.matches.clear();
        match first_entry(&q) {
            Ok(Some(e)) => self.read = Cursor::parse(&e.cursor),
            Ok(None) => self.start_over = true,
            Err(e) => tracing::warn!("cannot look at the journal's newest entry: {e}"),
        }
    }

    /// Starts journalctl if it is not running and its back-off is over.
    fn ensure_reader(&mut self) {
        if self.reader.is_some()
            || self.finished
            || self.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        if !self.started {
            self.started = true;
            // journalctl --after-cursor with a cursor it no longer holds
            // skips the entry it lands on: start at the oldest instead.
            if let Some(saved) = self.saved.clone()
                && self.check_vacuum(&saved)
            {
                self.read = None;
                self.start_over = true;
            }
            if self.saved.is_none() && !self.options.from_beginning {
                self.mark_now();
            }
        }
        let query = self.query(self.start());
        match Reader::spawn(
            &query,
            !self.options.once,
            self.waker.clone(),
            self.options.max_line,
        ) {
            Ok(r) => self.reader = Some(r),
            Err(e) => {
                tracing::error!(
                    "cannot start {}: {e}; trying again in {} s",
                    self.options.program.display(),
                    self.retry_wait.as_secs_f32()
                );
                self.back_off();
            }
        }
    }

    fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.retry_wait);
        self.retry_wait = (self.retry_wait * 2).min(LAST_RETRY);
    }

    /// The next entry journalctl gave, if one is waiting.
    fn next_entry(&mut self) -> Option<Entry> {
        loop {
            let reader = self.reader.as_ref()?;
            match reader.entries.try_recv() {
                Ok(Received::Entry(e)) => {
                    self.retry_wait = FIRST_RETRY;
                    return Some(e);
                }
                Ok(Received::Skipped(why)) => self.skipped(&why),
                Ok(Received::Ended(said)) => {
                    self.reader_ended(&said);
                    return None;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.reader_ended("");
                    return None;
                }
            }
        }
    }

    /// An entry journalctl printed that cannot be used: said at most once
    /// a minute, with how many since.
    fn skipped(&mut self, why: &str) {
        self.skipped += 1;
        let due = self
            .skipped_said
            .is_none_or(|t| t.elapsed() >= SKIPPED_SAID_EVERY);
        if due {
            tracing::warn!(
                "journal: {} entries skipped so far, the last one: {why}",
                self.skipped
            );
            self.skipped_said = Some(Instant::now());
        }
    }

    fn reader_ended(&mut self, said: &str) {
        self.reader = None;
        self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        if self.options.once {
            // Read to its end: done.
            self.finished = true;
            return;
        }
        tracing::warn!(
            "journalctl ended{}; starting it again in {} s",
            match said.is_empty() {
                true => String::new(),
                false => format!(" ({said})"),
            },
            self.retry_wait.as_secs_f32()
        );
        self.back_off();
    }

    /// The cursor below which every line handed on is delivered.
    fn delivered(&self) -> Option<&Cursor> {
        match self.in_flight.front() {
            Some(f) => f.before.as_ref(),
            None => self.read.as_ref(),
        }
    }
}

/// The messages of the last `n` entries of `selection` (for `check`), one
/// a line.
pub fn recent_messages(
    directory: Option<PathBuf>,
    selection: &Selection,
    n: usize,
) -> io::Result<Vec<u8>> {
    let query = Query {
        program: "journalctl".into(),
        directory,
        matches: vec![selection.matching()],
        start: Start::Beginning,
    };
    let out = query
        .command(false)
        .arg(format!("--lines={n}"))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "journalctl failed ({}); is the user in the group systemd-journal?",
            out.status
        )));
    }
    let mut text = Vec::new();
    for e in reader::entries_of(&out.stdout, 16 << 20) {
        text.extend_from_slice(&e.message);
        text.push(b'\n');
    }
    Ok(text)
}

/// The first entry `query` gives (not following), if any.
fn first_entry(query: &Query) -> io::Result<Option<Entry>> {
    let mut child = query
        .command(false)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let entry = match child.stdout.take() {
        Some(out) => {
            let mut r = io::BufReader::new(out);
            reader::read_entry(&mut r, 1 << 20)?.and_then(Result::ok)
        }
        None => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(entry)
}

/// Whether the journal still holds the entry at `cursor`.
fn cursor_exists(query: &Query, cursor: &Cursor) -> bool {
    let mut q = query.clone();
    q.matches.clear();
    q.start = Start::At(cursor.text.clone());
    first_entry(&q)
        .ok()
        .flatten()
        .and_then(|e| Cursor::parse(&e.cursor))
        .is_some_and(|c| c.seqnum_id == cursor.seqnum_id && c.seqnum == cursor.seqnum)
}

impl Source for JournalSource {
    fn look(&mut self, _why: Look) -> io::Result<()> {
        self.ensure_reader();
        Ok(())
    }

    fn poll(
        &mut self,
        budget: usize,
        emit: &mut dyn FnMut(SourceLine<'_>) -> Handling,
    ) -> io::Result<PollOutcome> {
        self.ensure_reader();
        let mut outcome = PollOutcome::default();
        while outcome.lines < budget {
            let Some(entry) = self.next_entry() else {
                break;
            };
            self.stats.entries.fetch_add(1, Ordering::Relaxed);
            let Some(cursor) = Cursor::parse(&entry.cursor) else {
                tracing::warn!("journal: an entry without a usable cursor skipped");
                continue;
            };
            let (stream, seqnum) = (cursor.stream(), cursor.seqnum);
            let before = self.read.replace(cursor);
            let Some(log) = self.options.selections.iter().position(|s| s.takes(&entry)) else {
                // Matched by journalctl, not by us (a field that repeats):
                // nothing to deliver.
                continue;
            };
            let end = self.next_end;
            self.next_end += 1;
            let mut message = entry.message;
            let truncated = entry.truncated;
            while message.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                message.pop();
            }
            let sample = &mut self.samples[log];
            if sample.lines.len() < SAMPLE_LINES && sample.bytes + message.len() <= SAMPLE_BYTES {
                sample.bytes += message.len();
                sample.lines.push(message.clone());
                sample.end = end + 1;
            }
            let line = SourceLine {
                origin: Origin {
                    extra: &[],
                    name: &self.names[log],
                    log,
                    head: &self.samples[log],
                },
                part: 0,
                stream,
                line: Line {
                    bytes: &message,
                    offset: seqnum,
                    end,
                    number: end,
                    truncated,
                    fresh: true,
                    time: entry.time,
                },
            };
            outcome.lines += 1;
            if emit(line) == Handling::Pending {
                self.in_flight.push_back(InFlight { end, before });
            }
        }
        outcome.more = outcome.lines >= budget;
        Ok(outcome)
    }

    fn acknowledge(&mut self, _part: u64, end: u64) {
        while self.in_flight.front().is_some_and(|f| f.end <= end) {
            self.in_flight.pop_front();
        }
    }

    fn settle(&mut self) {}

    /// Nothing delivered yet (a vacuumed position, reading from the oldest
    /// entry) is nothing to save.
    fn positions_dirty(&self) -> bool {
        self.delivered()
            .is_some_and(|at| self.saved.as_ref() != Some(at))
    }

    fn save_positions(&mut self, _force: bool) -> io::Result<()> {
        let Some(at) = self.delivered().cloned() else {
            return Ok(());
        };
        if self.saved.as_ref() != Some(&at) {
            self.file.save(&at)?;
            self.saved = Some(at);
        }
        Ok(())
    }

    /// With `once`, until journalctl has read the journal to its end; and
    /// while journalctl waits out its back-off, so that the loop comes
    /// back to start it again.
    fn holds_back(&self) -> bool {
        (self.options.once && !self.finished) || (self.reader.is_none() && self.retry_at.is_some())
    }

    fn origins(&self, visit: &mut dyn FnMut(Origin<'_>)) {
        for (log, sample) in self.samples.iter().enumerate() {
            if !sample.lines.is_empty() {
                visit(Origin {
                    extra: &[],
                    name: &self.names[log],
                    log,
                    head: sample,
                });
            }
        }
    }
}
