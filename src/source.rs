//! Source: what the agent's loop reads lines from and hands
//! acknowledgements back to, whatever kind of input it is.
//!
//! A [`Source`] follows one kind of input (the tailer follows files; the
//! systemd journal and container runtimes' files are kinds to come) and
//! owns its positions: where each line lies, in its own terms, and the
//! checkpoints those positions are saved as. The agent's loop knows
//! sources only through this trait: it asks them to look for new input,
//! polls them for lines, gives each line to the pipeline, hands the
//! acknowledgements of the lines' events back to the source they came
//! from, and asks them to save their positions. Parse, event and delivery
//! see only a [`SourceLine`]: its bytes, its [`Origin`] (which configured
//! log, a name for messages, and a [`Head`] to detect its format from) and
//! its position.
//!
//! A new kind of input is a new implementation of [`Source`], registered
//! where the agent opens its sources (or handed to
//! `Agent::start_with_inputs` as an [`Input`]); nothing else changes.
//! `docs/sources.md` tells the whole story.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::parse::Pattern;

/// One line, without its newline, and where it lies in its source.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// Where the line starts (for a file: the byte offset of its first
    /// byte). With the line's stream, this is its `event_id`: the same
    /// line read again must get the same offset.
    pub offset: u64,
    /// Where the line ends (for a file: just past its newline, where
    /// reading resumes): acknowledging it acknowledges everything of its
    /// part up to here.
    pub end: u64,
    /// 1-based line number, counted from where reading started (for
    /// messages).
    pub number: u64,
    /// The line was longer than the limit and was cut.
    pub truncated: bool,
    /// Bytes of this line came from a read made since the previous line
    /// was handed out (the tailer checks then that the file was not
    /// truncated under it).
    pub fresh: bool,
    /// When the source says the line was written (a journal entry's time,
    /// in microseconds since the epoch), for an event whose format logs no
    /// time; `None` for files (such an event gets the time it was read).
    pub time: Option<i64>,
}

/// The start of the input a line came from, for format detection: a
/// file's first lines, or a journal unit's first messages.
pub trait Head {
    /// Up to `max_lines` lines from the start of the input, and where they
    /// end. Must not move the source's own place in its input.
    fn first_lines(&self, max_lines: usize) -> io::Result<(Vec<Vec<u8>>, u64)>;
}

/// Lines kept in memory are their own head.
impl Head for Vec<Vec<u8>> {
    fn first_lines(&self, max_lines: usize) -> io::Result<(Vec<Vec<u8>>, u64)> {
        let lines: Vec<Vec<u8>> = self.iter().take(max_lines).cloned().collect();
        let end = lines.iter().map(|l| l.len() as u64 + 1).sum();
        Ok((lines, end))
    }
}

/// Where a line comes from, as the pipeline sees it.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    /// What messages call it: a file's watched path, or a name the source
    /// kind gives (it must not collide with a file's path). The pipeline
    /// keeps one pattern choice per name.
    pub name: &'a Path,
    /// Which configured log of its source it belongs to (the source's own
    /// numbering, from 0; the agent maps it to the plan's).
    pub log: usize,
    /// Its first lines, for format detection.
    pub head: &'a dyn Head,
    /// JSON members added to each of its events, each after a comma (what
    /// a container log's path says of its container; empty for most).
    pub extra: &'a [u8],
}

impl std::fmt::Debug for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("name", &self.name)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Origin<'_> {
    /// Up to `max_lines` lines from the start of its input, and where they
    /// end.
    pub fn first_lines(&self, max_lines: usize) -> io::Result<(Vec<Vec<u8>>, u64)> {
        self.head.first_lines(max_lines)
    }
}

/// A line handed to the agent's loop.
#[derive(Debug)]
pub struct SourceLine<'a> {
    pub origin: Origin<'a>,
    /// The part of the source the line is in, as the source numbers it
    /// (for files: the open file): acknowledge with it.
    pub part: u64,
    /// The content the line is in, as a number that every copy of it
    /// shares (for files: compressed rotations too): goes into `event_id`
    /// with the line's offset.
    pub stream: u64,
    pub line: Line<'a>,
}

/// What the consumer did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Handed to the sink; [`Source::acknowledge`] will follow.
    Pending,
    /// Nothing to deliver (a blank or failed line): counts as delivered.
    Done,
}

/// What a poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    pub lines: usize,
    /// Some input has more to read (the budget ran out).
    pub more: bool,
}

/// Why the loop asks a source to look for new input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Something changed where the source said to watch (files created,
    /// renamed or deleted): look closely.
    Changed,
    /// The periodic look (every few seconds), for what the watcher missed.
    Periodic,
}

/// One kind of input, as the agent's loop drives it. Every method returns
/// quickly: a source never blocks the loop (one whose input must be waited
/// for reads it on a thread of its own and wakes the loop).
pub trait Source {
    /// Looks for new input (new files, rotations). An error of the first
    /// look stops the agent's start; later ones are reported by the loop.
    fn look(&mut self, why: Look) -> io::Result<()>;

    /// Folders whose changes should wake the loop with [`Look::Changed`].
    fn watch_dirs(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Hands up to `budget` lines to `emit`, each with its origin and
    /// position.
    fn poll(
        &mut self,
        budget: usize,
        emit: &mut dyn FnMut(SourceLine<'_>) -> Handling,
    ) -> io::Result<PollOutcome>;

    /// Every line of `part` that ends at or before `end` was delivered.
    /// Acknowledgements of one part may come out of order.
    fn acknowledge(&mut self, part: u64, end: u64);

    /// After a round of acknowledgements: moves positions to what is now
    /// delivered, and lets go of parts read and delivered to their end.
    fn settle(&mut self);

    /// The loop's once-a-second look, even while it reads nothing (a full
    /// sink): for files, new content is given a checkpoint.
    fn tick(&mut self) {}

    /// Whether positions changed since they were last saved.
    fn positions_dirty(&self) -> bool;

    /// Saves positions if they changed (always with `force`, at a stop).
    fn save_positions(&mut self, force: bool) -> io::Result<()>;

    /// Input read to its end may still give lines without a new look (a
    /// rotated file waiting out `rotate_wait`, files waiting for room):
    /// `--once` is not done, and the loop comes back within a second.
    fn holds_back(&self) -> bool {
        false
    }

    /// Acknowledgements make room for input waiting its turn: the loop
    /// reads again at once after them.
    fn waits_for_room(&self) -> bool {
        false
    }

    /// Every input it holds now, as the pipeline sees it (to choose their
    /// formats at start).
    fn origins(&self, visit: &mut dyn FnMut(Origin<'_>));

    /// Per input, what it holds that is not delivered yet (for files:
    /// bytes), for the metrics.
    fn lags(&self) -> Vec<(PathBuf, u64)> {
        Vec::new()
    }

    /// Reads that failed so far (each retried).
    fn read_errors(&self) -> u64 {
        0
    }

    /// Per input, bytes of an incomplete last line (said at the end).
    fn partial_lines(&self) -> Vec<(PathBuf, usize)> {
        Vec::new()
    }
}

/// A source handed to the agent beside those its plan opens, with the
/// patterns of its configured logs (by the source's own log number; `None`
/// detects the format from the [`Origin::head`]).
pub struct Input {
    pub source: Box<dyn Source + Send>,
    pub formats: Vec<Option<Arc<Pattern>>>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("formats", &self.formats.len())
            .finish_non_exhaustive()
    }
}
