//! One open log file: its reader, its identity, the lines handed out and
//! not yet acknowledged, and whether its path still names it.
//!
//! The [`super::Tailer`] decides which files are open (discovery, rotation,
//! recovery at start); what happens inside one file (checking it was not
//! truncated, reading its lines, finishing it once rotated) is here.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::FileStart;
use super::identity::FileIdentity;
use super::lines::{Line, LineReader};
use crate::container::{ContainerMeta, Kind, Step, Unwrapper, Unwrapping};
use crate::source::{Handling, Origin, SourceLine};

/// Whether a file is still the one its path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Live,
    /// Rotated away or deleted; read until it stops growing.
    Rotated {
        last_growth: Instant,
    },
    /// Read to its end; kept only until its lines are acknowledged.
    Finished,
}

/// The numbers a file's lines carry, known once it has a fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ids {
    /// Acknowledgement routing ([`FileIdentity::source_id`]).
    source: u64,
    /// `event_id`'s file part ([`FileIdentity::stream_id`]).
    stream: u64,
}

impl Ids {
    fn of(identity: &FileIdentity) -> Option<Ids> {
        identity.fingerprint.map(|_| Ids {
            source: identity.source_id(),
            stream: identity.stream_id(),
        })
    }
}

/// What one read of a file found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileRead {
    pub lines: usize,
    /// The budget ran out before the end of the file.
    pub more: bool,
    /// The file was truncated between the check and the read; the lines
    /// not handed out start here.
    pub torn_at: Option<u64>,
    /// Bytes the read went through.
    pub bytes: u64,
}

#[derive(Debug)]
pub(super) struct TailedFile {
    pub watched: PathBuf,
    pub reader: LineReader<File>,
    /// A second handle on the same open file, to read its head for the
    /// fingerprint while the reader is busy.
    pub head: File,
    pub identity: FileIdentity,
    /// The configured log it belongs to (see [`Origin::log`]).
    pub log: usize,
    pub(super) max_line: usize,
    ids: Option<Ids>,
    pub state: State,
    /// (start, end) of lines handed out and not yet acknowledged, in order.
    in_flight: VecDeque<(u64, u64)>,
    /// Size and modification time at the last truncation check.
    last_seen: Option<(u64, Option<SystemTime>)>,
    /// Turns a container runtime's records into the program's lines (does
    /// nothing to a plain log's).
    pub(super) unwrapper: Unwrapper,
    /// The node's name, for a container log's metadata.
    pub(super) node: Option<std::sync::Arc<str>>,
    /// JSON members for each event (a container's metadata), once the
    /// wrapper is decided.
    extra: Option<Vec<u8>>,
    /// Nothing writes to it (a compressed rotation's content): once rotated
    /// it is finished at its end, without waiting out `rotate_wait`.
    pub(super) cannot_grow: bool,
}

impl TailedFile {
    pub(crate) fn from_file(
        watched: &Path,
        file: File,
        offset: u64,
        max_line: usize,
    ) -> io::Result<Self> {
        let identity = FileIdentity::of(&file)?;
        Self::with_identity(watched, file, identity, offset, max_line)
    }

    /// The open `file`, known as `identity` (read from this same handle
    /// when its start offset was decided: a path opened twice may name
    /// two files, when logrotate renames in between).
    pub(crate) fn with_identity(
        watched: &Path,
        mut file: File,
        identity: FileIdentity,
        offset: u64,
        max_line: usize,
    ) -> io::Result<Self> {
        file.seek(SeekFrom::Start(offset))?;
        Ok(TailedFile {
            head: file.try_clone()?,
            watched: watched.to_owned(),
            ids: Ids::of(&identity),
            identity,
            log: 0,
            max_line,
            reader: LineReader::new(file, offset, max_line),
            state: State::Live,
            in_flight: VecDeque::new(),
            last_seen: None,
            unwrapper: Unwrapper::new(Unwrapping::default(), max_line),
            node: None,
            extra: None,
            cannot_grow: false,
        })
    }

    /// Unwraps this file's records as `how` says.
    pub(super) fn unwrap_as(&mut self, how: Unwrapping, node: Option<std::sync::Arc<str>>) {
        self.unwrapper = Unwrapper::new(how, self.max_line);
        self.node = node;
        self.extra = None;
    }

    /// The start of this file, for detection, unwrapped as its lines are.
    pub(super) fn start(&self) -> FileStart<'_> {
        FileStart::new(&self.head, self.max_line).unwrapped(self.unwrapper.settings())
    }

    /// The file as the consumer sees it.
    pub fn origin<'a>(&'a self, start: &'a FileStart<'a>) -> Origin<'a> {
        origin(&self.watched, self.log, start, self.extra.as_deref())
    }

    /// Acknowledgements for this file carry this number (`None` until it
    /// has a fingerprint, when no line was handed out yet).
    pub fn source(&self) -> Option<u64> {
        self.ids.map(|i| i.source)
    }

    /// A file opened before its first line was complete (a rotation's new,
    /// empty file) has no fingerprint, so no checkpoint: the store cannot
    /// say it was seen. Once the line is there, take the fingerprint, so
    /// that a crash before the first read still finds the file (and reads
    /// it from its checkpoint, 0) instead of taking it for one already
    /// read. Nothing was handed out yet, so no acknowledgement carries the
    /// old number.
    pub(crate) fn learn_identity(&mut self) {
        if self.ids.is_some() || self.identity.fingerprint.is_some() {
            return;
        }
        if let Ok(id) = FileIdentity::of(&self.head)
            && id.fingerprint.is_some()
        {
            self.identity = id;
            self.ids = Ids::of(&id);
        }
    }

    /// How far into the file we have read (complete lines and the partial
    /// line held).
    pub(crate) fn read_position(&self) -> u64 {
        self.reader.offset() + self.reader.pending().len() as u64
    }

    /// The offset below which everything is delivered.
    pub fn delivered(&self) -> u64 {
        let below = self
            .in_flight
            .front()
            .map(|(start, _)| *start)
            .unwrap_or(self.reader.offset());
        // A line whose pieces are still being joined is not delivered.
        self.unwrapper.held_from().map_or(below, |h| h.min(below))
    }

    /// Live, read to the end of what it holds with every line delivered,
    /// no partial line held, known by its fingerprint (so its checkpoint
    /// finds it again), and unchanged for `quiet`: it can be closed, and
    /// opened again from its checkpoint when it grows (see
    /// `Tailer::park_idle`).
    pub(crate) fn is_idle(&self, quiet: std::time::Duration) -> bool {
        self.state == State::Live
            && self.in_flight.is_empty()
            && self.reader.pending().is_empty()
            && self.unwrapper.held_from().is_none()
            && self.ids.is_some()
            && self.head.metadata().is_ok_and(|m| {
                m.len() == self.reader.offset()
                    && m.modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age >= quiet)
            })
    }

    /// Read to its end and every line delivered: it can be closed.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Finished && self.in_flight.is_empty()
    }

    pub(crate) fn same_inode(&self, meta: &std::fs::Metadata) -> bool {
        self.identity.device == meta.dev() && self.identity.inode == meta.ino()
    }

    /// The consumer delivered every line that ends at or before `end`.
    pub fn acknowledge(&mut self, end: u64) {
        while self.in_flight.front().is_some_and(|(_, e)| *e <= end) {
            self.in_flight.pop_front();
        }
    }

    /// Makes the next [`TailedFile::was_truncated`] look at the file even if
    /// its size and time did not change.
    pub(crate) fn forget_seen(&mut self) {
        self.last_seen = None;
    }

    /// Whether the file's first line is no longer the one it had.
    fn head_changed(&self) -> bool {
        self.identity.fingerprint.is_some()
            && FileIdentity::of(&self.head)
                .is_ok_and(|id| id.fingerprint != self.identity.fingerprint)
    }

    /// Before reading: was the file truncated (copytruncate)? It shrank
    /// below our offset, or it was truncated and written past our offset
    /// again, and then its first line changed. Reading first would hand out
    /// fragments of the new content.
    pub(crate) fn was_truncated(&mut self) -> bool {
        if self.state == State::Finished {
            return false;
        }
        let Ok(meta) = self.head.metadata() else {
            return false;
        };
        // Only a file that changed since the last look can have been
        // truncated; reading its head otherwise would be an inotify event
        // (and a wake-up) for nothing.
        let seen = (meta.len(), meta.modified().ok());
        if self.last_seen == Some(seen) {
            return false;
        }
        self.last_seen = Some(seen);
        meta.len() < self.read_position() || self.head_changed()
    }

    /// Reads up to `budget` lines, handing each to `emit`; a rotated file
    /// that stopped growing for `rotate_wait` is finished.
    pub fn read(
        &mut self,
        budget: usize,
        now: Instant,
        rotate_wait: Duration,
        emit: &mut dyn FnMut(SourceLine<'_>) -> Handling,
    ) -> io::Result<FileRead> {
        let mut read = FileRead::default();
        if self.state == State::Finished {
            return Ok(read);
        }
        let before = self.reader.offset();
        let mut at_end = false;
        loop {
            if read.lines >= budget {
                read.more = true;
                break;
            }
            let Some(line) = self.reader.next_line()? else {
                at_end = true;
                break;
            };
            // The check before reading cannot see a truncation that happens
            // between it and the read: the read would then give bytes of the
            // new content at the old offset (a torn line, then lines out of
            // place). So after every read, and before any line holding its
            // bytes goes out, the file's first line must still be the one
            // it was.
            if line.fresh
                && self.identity.fingerprint.is_some()
                && FileIdentity::of(&self.head)
                    .is_ok_and(|id| id.fingerprint != self.identity.fingerprint)
            {
                read.torn_at = Some(line.offset);
                read.more = true;
                break;
            }
            read.lines += 1;
            let ids = match self.ids {
                Some(ids) => ids,
                None => {
                    // A complete line exists now, so does the fingerprint.
                    self.identity = FileIdentity::of(&self.head)?;
                    let ids = Ids::of(&self.identity).ok_or_else(|| {
                        io::Error::other("the file's first line vanished while it was read")
                    })?;
                    self.ids = Some(ids);
                    ids
                }
            };
            decide_wrapper(
                &mut self.extra,
                &mut self.unwrapper,
                line.bytes,
                &self.watched,
                self.node.as_deref(),
            );
            let how = self.unwrapper.settings();
            let line = match self.unwrapper.record(line) {
                Step::Line(line) => line,
                Step::Held | Step::Skipped => continue,
            };
            let start = FileStart::new(&self.head, self.max_line).unwrapped(how);
            let origin = origin(&self.watched, self.log, &start, self.extra.as_deref());
            hand_out(origin, ids, &mut self.in_flight, line, emit);
        }
        self.maybe_finish(read.lines > 0, at_end, now, rotate_wait, emit);
        read.bytes = self.reader.offset().saturating_sub(before);
        Ok(read)
    }

    /// A rotated file read to its end that has not grown for `rotate_wait`
    /// is done. The server writes no more to it: the held partial line, if
    /// any, is all there is.
    fn maybe_finish(
        &mut self,
        read_any: bool,
        at_end: bool,
        now: Instant,
        rotate_wait: Duration,
        emit: &mut dyn FnMut(SourceLine<'_>) -> Handling,
    ) {
        let State::Rotated { last_growth } = &mut self.state else {
            return;
        };
        if read_any && !self.cannot_grow {
            *last_growth = now;
            return;
        }
        // Only a file read to its end is done: one the budget did not reach
        // this time still has lines to give.
        let rotate_wait = if self.cannot_grow {
            Duration::ZERO
        } else {
            rotate_wait
        };
        if !at_end || now.duration_since(*last_growth) < rotate_wait {
            return;
        }
        // A file of one line without newline never got a fingerprint:
        // its line still goes out, under the numbers of an empty head.
        let ids = *self.ids.get_or_insert(Ids {
            source: self.identity.source_id(),
            stream: self.identity.stream_id(),
        });
        if let Some(line) = self.reader.take_partial() {
            decide_wrapper(
                &mut self.extra,
                &mut self.unwrapper,
                line.bytes,
                &self.watched,
                self.node.as_deref(),
            );
            let how = self.unwrapper.settings();
            if let Step::Line(line) = self.unwrapper.record(line) {
                let start = FileStart::new(&self.head, self.max_line).unwrapped(how);
                let origin = origin(&self.watched, self.log, &start, self.extra.as_deref());
                hand_out(origin, ids, &mut self.in_flight, line, emit);
            }
        }
        // Lines whose last piece the runtime never wrote go out as they are.
        let how = self.unwrapper.settings();
        for held in self.unwrapper.take_held() {
            let start = FileStart::new(&self.head, self.max_line).unwrapped(how);
            let origin = origin(&self.watched, self.log, &start, self.extra.as_deref());
            let line = Line {
                bytes: &held.bytes,
                offset: held.start,
                end: self.reader.offset(),
                number: held.number,
                truncated: held.truncated,
                fresh: false,
                time: held.time,
            };
            hand_out(origin, ids, &mut self.in_flight, line, emit);
        }
        tracing::debug!(
            "{}: the rotated file (inode {}) is read to its end, offset {} of {}",
            self.watched.display(),
            self.identity.inode,
            self.reader.offset(),
            self.head.metadata().map(|m| m.len()).unwrap_or(0)
        );
        self.state = State::Finished;
    }
}

/// A file's lines as the pipeline sees them: named by the watched path,
/// part of configured log `log`, detected from `start`.
fn origin<'a>(
    watched: &'a std::path::Path,
    log: usize,
    start: &'a FileStart<'a>,
    extra: Option<&'a [u8]>,
) -> Origin<'a> {
    Origin {
        name: watched,
        log,
        head: start,
        extra: extra.unwrap_or_default(),
    }
}

/// Until the file's wrapper is decided (auto: by its first record), decides
/// it from `record` and renders what the path says of the container (the
/// JSON members each event of the file gets). Once decided, nothing: the
/// per-line cost is one check.
fn decide_wrapper(
    extra: &mut Option<Vec<u8>>,
    unwrapper: &mut Unwrapper,
    record: &[u8],
    watched: &Path,
    node: Option<&str>,
) {
    if extra.is_some() {
        return;
    }
    unwrapper.decide(record);
    *extra = match unwrapper.kind() {
        None => return,
        Some(Kind::Plain) => Some(Vec::new()),
        Some(Kind::Cri | Kind::Docker) => Some(
            ContainerMeta::of_path(watched)
                .map(|m| m.json_members(node))
                .unwrap_or_default(),
        ),
    };
}

/// Gives `line` to the consumer, remembering it until acknowledged if the
/// consumer sent it on.
fn hand_out(
    origin: Origin<'_>,
    ids: Ids,
    in_flight: &mut VecDeque<(u64, u64)>,
    line: Line<'_>,
    emit: &mut dyn FnMut(SourceLine<'_>) -> Handling,
) {
    let (start, end) = (line.offset, line.end);
    let tailed = SourceLine {
        origin,
        part: ids.source,
        stream: ids.stream,
        line,
    };
    if emit(tailed) == Handling::Pending {
        in_flight.push_back((start, end));
    }
}
