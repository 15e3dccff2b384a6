//! Tail: follow log files the way servers write and rotate them.
//!
//! The [`Tailer`] owns every open log file. [`Tailer::scan`] looks at the
//! watched paths (expanding globs) and notices new files, rotation by rename
//! (the path now names another inode: the old file is kept open and read to
//! its end), deletion (likewise), and truncation by `copytruncate` (the file
//! shrank below our offset: the copy beside it is found by fingerprint and
//! read from our offset, and the file restarts at 0). [`Tailer::poll`] hands
//! out complete lines with where they lie. The consumer acknowledges lines
//! once delivered ([`Tailer::acknowledge`]), and only acknowledgements move
//! the [`CheckpointStore`].
//!
//! A file is known by its [`FileIdentity`]; at start, a checkpointed file
//! that was rotated while the agent was stopped is looked for among the
//! rotated siblings of its path and finished from its checkpoint.

mod access;
pub mod checkpoint;
pub mod discover;
mod file;
pub mod identity;
pub mod lines;
mod stats;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use checkpoint::CheckpointStore;
pub use identity::FileIdentity;
pub(crate) use identity::Fingerprint;
pub(crate) use lines::LineReader;
pub use stats::TailStats;

use crate::container::{Streams, Unwrapper, Unwrapping, Wrapper};
use crate::source::{Handling, Head, Look, Origin, PollOutcome, Source, SourceLine};
use checkpoint::{Checkpoint, Loaded};
use discover::Sibling;
use file::{State, TailedFile};

/// How the tailer behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct TailOptions {
    /// `--log` values: paths or globs.
    pub logs: Vec<String>,
    /// Files the globs must not take (`exclude`).
    pub exclude: Vec<glob::Pattern>,
    /// Folders a symbolic link a glob finds may point into, besides the
    /// glob's own (see [`discover::expand`]).
    pub follow_symlinks_into: Vec<PathBuf>,
    /// Files without checkpoint found at start are read from their start.
    pub from_beginning: bool,
    /// Longest line kept whole.
    pub max_line: usize,
    /// How long a rotated or deleted file is kept open after it stopped
    /// growing, for lines the server still writes to it.
    pub rotate_wait: Duration,
    /// At most this many rotated files are kept open at once.
    pub max_rotated_open: usize,
    /// At most this many files are open at once (each holds two
    /// descriptors and a read buffer): beyond it, idle files are closed
    /// and others wait their turn (see [`Tailer::park_idle`]).
    pub max_open_files: usize,
    /// A file unchanged this long may be closed to make room (zero with
    /// `--once`: a file read to its end is done).
    pub park_after: Duration,
    /// Per `--log` value (in the same order), how its files' records are
    /// unwrapped (container runtimes' logs); `auto` for those not listed.
    pub unwrapping: Vec<Unwrapping>,
    /// The node's name, added to a container log's metadata.
    pub node_name: Option<std::sync::Arc<str>>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            logs: Vec::new(),
            exclude: Vec::new(),
            follow_symlinks_into: Vec::new(),
            from_beginning: false,
            max_line: lines::DEFAULT_MAX_LINE,
            rotate_wait: Duration::from_secs(5),
            max_rotated_open: 64,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            park_after: Duration::from_secs(30),
            unwrapping: Vec::new(),
            node_name: None,
        }
    }
}

/// Files open at once by default: 2 descriptors each, well within the
/// 1,024 a process often gets, with room for the backend, the metrics port
/// and the state folder.
pub(crate) const DEFAULT_MAX_OPEN_FILES: usize = 256;

/// A followed file closed while idle, to hold no descriptor: what was
/// open at its path, and how far it was read (all of it). Its checkpoint
/// stays; it is opened again from it when its path shows a change.
#[derive(Debug, Clone, Copy)]
struct Parked {
    identity: FileIdentity,
    len: u64,
}

/// The start of an open file, for format detection: read at positions
/// through the tailer's own handle (the file the lines come from, even
/// once its path names a newer one), so the tailer's place does not move.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileStart<'a> {
    file: &'a std::fs::File,
    max_line: usize,
    /// How the file's records are unwrapped (a container runtime's).
    unwrap: Unwrapping,
}

impl<'a> FileStart<'a> {
    pub(crate) fn new(file: &'a std::fs::File, max_line: usize) -> Self {
        FileStart {
            file,
            max_line,
            unwrap: Unwrapping {
                wrapper: Wrapper::None,
                streams: Streams::Both,
            },
        }
    }

    /// The same start, its records unwrapped as `how` says.
    pub(crate) fn unwrapped(self, how: Unwrapping) -> Self {
        FileStart {
            unwrap: how,
            ..self
        }
    }
}

impl Head for FileStart<'_> {
    /// Up to `max_lines` lines from the start of the file (within its
    /// first 4 MiB), and the offset where they end.
    fn first_lines(&self, max_lines: usize) -> io::Result<(Vec<Vec<u8>>, u64)> {
        let at = lines::ReadAt::new(self.file, 4 * 1024 * 1024);
        let mut reader = LineReader::new(at, 0, self.max_line);
        let mut sample = Vec::new();
        while sample.len() < max_lines {
            match reader.next_line()? {
                Some(l) => sample.push(l.bytes.to_vec()),
                None => break,
            }
        }
        if self.unwrap.wrapper != Wrapper::None {
            sample = Unwrapper::lines_of(self.unwrap, self.max_line, &sample);
        }
        Ok((sample, reader.offset()))
    }
}

/// Follows the watched files.
#[derive(Debug)]
pub struct Tailer {
    options: TailOptions,
    files: Vec<TailedFile>,
    checkpoints: CheckpointStore,
    /// Whether the first scan happened (files found later start at 0).
    started: bool,
    /// Paths already reported as missing, to say it once.
    waiting_for: HashSet<PathBuf>,
    /// When each path was last looked at: files rotated beside it since
    /// then were never seen.
    last_look: HashMap<PathBuf, SystemTime>,
    /// Timer rescans since the last full scan.
    quiet_rescans: u64,
    /// Reads that failed, and when each path's failure was last reported.
    read_errors: u64,
    error_reported: HashMap<PathBuf, Instant>,
    /// Files a glob found and that are not followed, said once each.
    skipped_reported: std::collections::HashSet<PathBuf>,
    /// Followed files closed while idle, by path.
    parked: HashMap<PathBuf, Parked>,
    /// Paths waiting for room to be opened (more files than
    /// `max_open_files`), oldest first, each with whether the first scan
    /// found it; and the same paths as a set.
    deferred: std::collections::VecDeque<(PathBuf, bool)>,
    deferred_set: HashSet<PathBuf>,
    /// When the wait for room was last reported.
    deferred_reported: Option<Instant>,
    /// Folder listings, for rotated siblings.
    listings: discover::Listings,
    /// When checkpoints of files that are gone were last looked for.
    last_prune: Option<Instant>,
    /// The paths the `--log` values named at the last scan.
    named: HashSet<PathBuf>,
    /// When the files a scan did not name were last summed up.
    failures_summed: Option<Instant>,
    /// No open file was idle at the last look (until the next poll): a
    /// scan of thousands of waiting paths looks once, not once a path.
    none_idle: bool,
    stats: std::sync::Arc<TailStats>,
}

/// How often a listing of rotated files is taken again when logrotate
/// renamed a file between the listing and its opening.
const RENAME_RETRIES: usize = 3;

/// A file that cannot be read is reported at most this often.
const ERROR_REPORT_EVERY: Duration = Duration::from_secs(60);
/// Files whose failure to open one scan names, at most; the rest are
/// summed up in one line.
const FAILURES_SAID_PER_SCAN: usize = 10;
/// Files not followed that are named in a message, at most.
const MAX_SKIPPED_REPORTED: usize = 10_000;

/// On timer rescans (every 5 s), rotated siblings are looked for only every
/// this many (about a minute): rotation shows as inotify structure events,
/// which trigger a full [`Tailer::scan`] anyway.
const SIBLING_LOOK_EVERY: u64 = 12;

/// Folders a glob's folder part may add to the watched ones, at most (the
/// kernel's default limit is 8,192 watches for a user; beyond this the
/// periodic look finds changes).
const MAX_GLOB_DIRS_WATCHED: usize = 4096;

/// How often checkpoints of files that are gone are looked for (each look
/// lists the folders of rotated files and reads their first bytes).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// File modification times lag the clock by up to a timer tick; siblings
/// this much older than our last look are still considered new.
const MTIME_SLACK: Duration = Duration::from_secs(1);

impl Tailer {
    pub fn new(options: TailOptions, checkpoints: CheckpointStore) -> Self {
        Tailer {
            options,
            files: Vec::new(),
            checkpoints,
            started: false,
            waiting_for: HashSet::new(),
            last_look: HashMap::new(),
            quiet_rescans: 0,
            read_errors: 0,
            error_reported: HashMap::new(),
            skipped_reported: std::collections::HashSet::new(),
            parked: HashMap::new(),
            deferred: std::collections::VecDeque::new(),
            deferred_set: HashSet::new(),
            deferred_reported: None,
            listings: discover::Listings::default(),
            last_prune: None,
            named: HashSet::new(),
            failures_summed: None,
            none_idle: false,
            stats: std::sync::Arc::default(),
        }
    }

    /// Counts into `stats` from now on (the metrics read them).
    pub(crate) fn share_stats(&mut self, stats: std::sync::Arc<TailStats>) {
        self.stats = stats;
    }

    /// Per live file, bytes written and not yet delivered.
    pub fn lags(&self) -> Vec<(PathBuf, u64)> {
        self.files
            .iter()
            .filter(|f| f.state == State::Live)
            .map(|f| {
                let len = f.head.metadata().map(|m| m.len()).unwrap_or(0);
                (f.watched.clone(), len.saturating_sub(f.delivered()))
            })
            .collect()
    }

    /// The open files that hold something, as the pipeline sees them.
    pub fn origins(&self, visit: &mut dyn FnMut(Origin<'_>)) {
        for f in self
            .files
            .iter()
            .filter(|f| f.state == State::Live && f.identity.fingerprint.is_some())
        {
            let start = f.start();
            visit(f.origin(&start));
        }
    }

    /// Starts following `f`, known as part of the first configured log that
    /// names its watched path (the plan's source of that index).
    fn follow(&mut self, mut f: TailedFile) {
        f.log = self.log_of(&f.watched);
        let how = self
            .options
            .unwrapping
            .get(f.log)
            .copied()
            .unwrap_or_default();
        f.unwrap_as(how, self.options.node_name.clone());
        self.files.push(f);
    }

    /// The index of the first `--log` value naming `path`: the path itself,
    /// or a glob matching it.
    fn log_of(&self, path: &Path) -> usize {
        self.options
            .logs
            .iter()
            .position(|value| {
                Path::new(value) == path
                    || (discover::is_glob(value)
                        && glob::Pattern::new(value).is_ok_and(|g| g.matches_path(path)))
            })
            .unwrap_or(0)
    }

    fn expand(&self, value: &str) -> (Vec<PathBuf>, Vec<discover::Skipped>) {
        discover::expand(
            value,
            &self.options.exclude,
            &self.options.follow_symlinks_into,
        )
    }

    /// Longest line kept whole.
    pub fn max_line(&self) -> usize {
        self.options.max_line
    }

    /// The folders to watch for changes: each value's deepest folder
    /// without glob characters, and the folders a glob's folder part
    /// matches now (`/var/log/pods/*/*/*.log` watches every pod's container
    /// folder, so a rotation there is seen at once, not at the next
    /// periodic look).
    pub(crate) fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .options
            .logs
            .iter()
            .map(|l| discover::watch_dir(l))
            .collect();
        for value in self.options.logs.iter().filter(|v| discover::is_glob(v)) {
            dirs.extend(discover::glob_dirs(value, MAX_GLOB_DIRS_WATCHED));
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Looks at every watched path: opens new files, notices rotation,
    /// deletion and truncation, and looks for rotated files it never saw.
    /// The first scan fails on folders the agent may not read; later scans
    /// only report problems. Call it when files were created, renamed or
    /// deleted (inotify's structure events).
    pub fn scan(&mut self) -> io::Result<()> {
        self.quiet_rescans = 0;
        self.scan_paths(true)
    }

    /// The periodic look, for what inotify may have missed: as
    /// [`Tailer::scan`], but looking for unseen rotated files only about once
    /// a minute (reading a folder is reported by inotify: a wake-up).
    pub fn rescan(&mut self) -> io::Result<()> {
        self.quiet_rescans += 1;
        self.scan_paths(self.quiet_rescans.is_multiple_of(SIBLING_LOOK_EVERY))
    }

    fn scan_paths(&mut self, look_siblings: bool) -> io::Result<()> {
        let first = !self.started;
        for dir in self.watch_dirs().into_iter().filter(|_| first) {
            if let Err(e) = std::fs::read_dir(&dir) {
                let msg = match e.kind() {
                    io::ErrorKind::PermissionDenied => format!(
                        "cannot read folder {}: permission denied (the agent needs read and execute permission on it)",
                        dir.display()
                    ),
                    io::ErrorKind::NotFound => continue,
                    _ => format!("cannot read folder {}: {e}", dir.display()),
                };
                return Err(io::Error::new(e.kind(), msg));
            }
        }
        let logs = self.options.logs.clone();
        let mut unreadable = 0;
        // Files of one scan whose failure was said; past a few, the rest
        // are summed up in one line (a glob over thousands of files a
        // rotation left unreadable must not write thousands of lines).
        let mut said = 0usize;
        let mut unsaid = 0usize;
        let mut named: HashSet<PathBuf> = HashSet::new();
        for value in &logs {
            let (paths, skipped) = self.expand(value);
            for s in skipped {
                self.report_skipped(s);
            }
            for path in paths {
                named.insert(path.clone());
                let Err(e) = self.scan_path(&path, first, look_siblings || first) else {
                    continue;
                };
                let denied = e.kind() == io::ErrorKind::PermissionDenied;
                unreadable += u64::from(denied);
                let msg = match denied {
                    true => format!("{}: {e} ({})", path.display(), access::hint(&path)),
                    false => format!("{}: {e}", path.display()),
                };
                // A file named at start that cannot be read is a set-up
                // error to show at once; one a glob found, or one that
                // appears later (a rotation's new file), costs only itself.
                if first && denied && !discover::is_glob(value) {
                    return Err(io::Error::new(e.kind(), msg));
                }
                if said < FAILURES_SAID_PER_SCAN {
                    let before = self.error_reported.get(&path).copied();
                    self.report_once_a_minute(&path, || msg);
                    said += usize::from(self.error_reported.get(&path).copied() != before);
                } else {
                    unsaid += 1;
                }
            }
        }
        if unsaid > 0
            && self
                .failures_summed
                .is_none_or(|t| t.elapsed() >= ERROR_REPORT_EVERY)
        {
            self.failures_summed = Some(Instant::now());
            tracing::error!(
                "and {unsaid} more files cannot be opened (the first {FAILURES_SAID_PER_SCAN} are named above; `cerberus-agent status` counts the unreadable ones)"
            );
        }
        self.named = named;
        // Files followed under paths no glob names any more (a deleted
        // pod's folder): looked at once more, so that a deleted one is
        // read to its end and let go.
        let unnamed: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|f| f.state == State::Live)
            .map(|f| f.watched.clone())
            .chain(self.parked.keys().cloned())
            .filter(|p| !self.named.contains(p))
            .collect();
        for path in unnamed {
            if let Err(e) = self.look_at(&path, false) {
                tracing::debug!("{}: {e}", path.display());
            }
        }
        self.stats.set_unreadable(unreadable);
        if !first && self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            self.forget_gone();
        }
        if first {
            // Record at once that these paths are watched from now on, so
            // that after a crash, files rotated beside them meanwhile are
            // known to be unseen.
            if let Err(e) = self.save_checkpoints(true) {
                tracing::error!("cannot save checkpoints: {e}");
            }
        }
        self.started = true;
        Ok(())
    }

    fn scan_path(&mut self, path: &Path, first: bool, look_siblings: bool) -> io::Result<()> {
        let looked = SystemTime::now();
        let result = self.look_at(path, first);
        // Files that appeared beside the path since we last looked, with
        // content we do not know, were rotated (or copied by copytruncate)
        // before we saw them: read them whole.
        if let Some(t) = self.last_look.get(path).copied().filter(|_| look_siblings) {
            let since = t.checked_sub(MTIME_SLACK).unwrap_or(UNIX_EPOCH);
            // A file opened empty and written since is known by the first
            // line it has now: a copy of it is not a new file.
            for f in &mut self.files {
                f.learn_identity();
            }
            self.adopt_newer_siblings(path, since)?;
            // Rotated twice and compressed since (the kubelet compresses
            // at the next rotation): the lines are in the compressed copy.
            self.adopt_compressed_siblings(path, since)?;
        }
        self.last_look.insert(path.to_owned(), looked);
        result
    }

    fn look_at(&mut self, path: &Path, first: bool) -> io::Result<()> {
        let live = self
            .files
            .iter()
            .position(|f| f.watched == path && f.state == State::Live);
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(p) = self.parked.remove(path) {
                    // Closed once read and delivered to its end: deleted,
                    // nothing more will come from it.
                    self.checkpoints.record(&p.identity, path, p.len, true);
                }
                if let Some(i) = live {
                    // Renamed away without a new file yet, or deleted: the
                    // open file is read to its end.
                    self.rotated(i);
                } else if self.waiting_for.insert(path.to_owned()) {
                    tracing::info!("{}: does not exist yet; waiting for it", path.display());
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.waiting_for.remove(path);
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "not a regular file ({}): not followed",
                    discover::kind_of(&meta)
                ),
            ));
        }
        match live {
            // Truncation is checked before every read (see `poll`).
            Some(i) if self.files[i].same_inode(&meta) => Ok(()),
            Some(i) => {
                self.rotated(i);
                self.open_new(path, first)
            }
            None => {
                if self.deferred_set.contains(path) {
                    // Already waiting its turn.
                    return Ok(());
                }
                if let Some(p) = self.parked.get(path)
                    && p.identity.device == std::os::unix::fs::MetadataExt::dev(&meta)
                    && p.identity.inode == std::os::unix::fs::MetadataExt::ino(&meta)
                    && p.len == meta.len()
                {
                    // Parked and unchanged: nothing to read.
                    return Ok(());
                }
                if self.files.len() >= self.options.max_open_files {
                    self.park_idle();
                }
                if self.files.len() >= self.options.max_open_files {
                    self.defer(path, first);
                    return Ok(());
                }
                self.parked.remove(path);
                match self.open_new(path, first) {
                    // Out of descriptors all the same (a lower limit than
                    // max_open_files allows for): wait for room as well.
                    Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                        self.defer(path, first);
                        Ok(())
                    }
                    opened => opened,
                }
            }
        }
    }

    /// `path` waits for room to be opened.
    fn defer(&mut self, path: &Path, first: bool) {
        if self.deferred_set.insert(path.to_owned()) {
            self.deferred.push_back((path.to_owned(), first));
        }
    }

    /// Closes the files that are idle (see [`TailedFile::is_idle`]) while
    /// more files want to be open than `max_open_files`: their checkpoints
    /// stay, and a change at their path opens them again from there.
    /// Descriptors and read buffers stay bounded however many files a glob
    /// names.
    pub(crate) fn park_idle(&mut self) {
        if self.none_idle {
            return;
        }
        let quiet = self.options.park_after;
        let before = self.files.len();
        let mut i = 0;
        while i < self.files.len() {
            if !self.files[i].is_idle(quiet) {
                i += 1;
                continue;
            }
            let f = self.files.swap_remove(i);
            self.checkpoints
                .record(&f.identity, &f.watched, f.delivered(), false);
            self.parked.insert(
                f.watched.clone(),
                Parked {
                    identity: f.identity,
                    len: f.read_position(),
                },
            );
        }
        self.none_idle = self.files.len() == before;
    }

    /// Opens waiting paths while there is room (parking idle files first).
    fn open_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        self.park_idle();
        while self.files.len() < self.options.max_open_files {
            let Some((path, first)) = self.deferred.pop_front() else {
                break;
            };
            self.deferred_set.remove(&path);
            if let Err(e) = self.look_at(&path, first) {
                let msg = format!("{}: {e}", path.display());
                self.report_once_a_minute(&path, || msg);
            }
            if self.deferred_set.contains(&path) {
                // Deferred again: no room after all.
                break;
            }
        }
        let waiting = self.deferred.len();
        let due = self
            .deferred_reported
            .is_none_or(|t| t.elapsed() >= ERROR_REPORT_EVERY);
        if waiting > 0 && due {
            self.deferred_reported = Some(Instant::now());
            tracing::warn!(
                "{waiting} files wait their turn to be read: {} are open (max_open_files), and the others are read first until they are idle",
                self.files.len()
            );
        }
    }

    /// Whether some files wait for room to be opened.
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The live file `i` is no longer at its path.
    fn rotated(&mut self, i: usize) {
        self.stats.rotated();
        let f = &mut self.files[i];
        tracing::info!(
            "{}: rotated; reading the old file to its end",
            f.watched.display()
        );
        f.state = State::Rotated {
            last_growth: Instant::now(),
        };
        let rotated: Vec<usize> = (0..self.files.len())
            .filter(|&j| matches!(self.files[j].state, State::Rotated { .. }))
            .collect();
        if rotated.len() > self.options.max_rotated_open {
            let oldest = rotated[0];
            let f = &mut self.files[oldest];
            tracing::warn!(
                "{}: more than {} rotated files open; closing the oldest at offset {} (lines after it are not read)",
                f.watched.display(),
                self.options.max_rotated_open,
                f.reader.offset()
            );
            f.state = State::Finished;
        }
    }

    /// File `i` shrank below our offset, or got a new first line:
    /// copytruncate, or a truncation by hand. It is read again from 0
    /// through the same open file (it may have been renamed since).
    ///
    /// `at` is where the lines not handed out start, when not the reader's
    /// offset (a truncation found after a read, see `poll`).
    fn truncated(&mut self, i: usize, at: Option<u64>) {
        self.stats.rotated();
        let watched = self.files[i].watched.clone();
        let offset = at.unwrap_or(self.files[i].reader.offset());
        tracing::info!(
            "{}: truncated below offset {offset}; reading it again from the start",
            watched.display()
        );
        let identity = self.files[i].identity;
        if let Err(e) = self.read_truncated_copy(&watched, &identity, offset) {
            tracing::warn!(
                "{}: truncated, and looking for the copy of its content beside it failed ({e}); lines written after offset {offset} before the truncation, if any, were not read",
                watched.display()
            );
        }
        let state = self.files[i].state;
        let reopened = self.files[i].head.try_clone().and_then(|same_file| {
            TailedFile::from_file(&watched, same_file, 0, self.options.max_line)
        });
        match reopened {
            Ok(mut f) => {
                self.files[i].state = State::Finished;
                f.state = state;
                self.follow(f);
            }
            Err(e) => {
                // Looked at again, and the reopening tried again, next poll.
                self.files[i].forget_seen();
                self.read_failed(i, &e);
            }
        }
    }

    /// What was between our offset and a truncation is in the copy
    /// copytruncate left beside the file, if it did: read it from there.
    fn read_truncated_copy(
        &mut self,
        watched: &Path,
        identity: &FileIdentity,
        offset: u64,
    ) -> io::Result<()> {
        let Some(fp) = identity.fingerprint else {
            return Ok(());
        };
        for _ in 0..RENAME_RETRIES {
            let copy = discover::siblings(&mut self.listings, watched)?
                .into_iter()
                .find(|s| {
                    s.identity.fingerprint == Some(fp)
                        && s.identity.inode != identity.inode
                        && s.len >= offset
                });
            match copy {
                Some(copy) if self.open_rotated_sibling(watched, &copy, offset)? => return Ok(()),
                // Renamed between the listing and the open: look again.
                Some(_) => continue,
                None => break,
            }
        }
        // Rotated again and compressed before the agent saw the truncation
        // (it reads nothing while the backend is away).
        match self.open_compressed_copy(watched, |x| x == fp, offset)? {
            true => {}
            false => tracing::warn!(
                "{}: truncated, and no copy of its content was found beside it (not even compressed); lines written after offset {offset} before the truncation, if any, were not read",
                watched.display()
            ),
        }
        Ok(())
    }

    /// Files rotated after the one we last had open, which we never saw
    /// (the path was rotated twice before we looked): read them whole.
    /// Copies of known files (same fingerprint) are not new.
    fn adopt_newer_siblings(
        &mut self,
        watched: &Path,
        newer_than: std::time::SystemTime,
    ) -> io::Result<()> {
        // Inodes this path's checkpoints know: a sibling that is one of
        // them with content they do not know is a file the agent followed
        // whose content changed under it (copytruncate truncated it and the
        // server wrote it anew) and got no checkpoint before a crash: its
        // lines were the agent's to deliver, however long ago it was last
        // written.
        let followed: Vec<(u64, u64)> = self
            .checkpoints
            .for_path(watched)
            .iter()
            .map(|c| (c.device, c.inode))
            .collect();
        for _ in 0..RENAME_RETRIES {
            let mut renamed = false;
            for s in discover::siblings(&mut self.listings, watched)? {
                let fingerprint = s.identity.fingerprint;
                let inode_followed = followed.contains(&(s.identity.device, s.identity.inode));
                let known = self.files.iter().any(|f| {
                    f.identity.same_inode(&s.identity)
                        || (fingerprint.is_some()
                            && f.identity.fingerprint == fingerprint
                            && f.watched == watched)
                }) || fingerprint
                    .is_some_and(|fp| self.checkpoints.has_fingerprint(watched, fp));
                tracing::debug!(
                    "{}: sibling {} (inode {}, {:?}, {} bytes): known {known}, newer {}, inode followed {inode_followed}",
                    watched.display(),
                    s.path.display(),
                    s.identity.inode,
                    fingerprint,
                    s.len,
                    s.modified >= newer_than
                );
                if !known && (s.modified >= newer_than || inode_followed) && fingerprint.is_some() {
                    renamed |= !self.open_rotated_sibling(watched, &s, 0)?;
                }
            }
            if !renamed {
                break;
            }
        }
        Ok(())
    }

    /// Compressed rotations of `watched` written after `newer_than` whose
    /// content the checkpoints do not know: read them whole.
    fn adopt_compressed_siblings(
        &mut self,
        watched: &Path,
        newer_than: std::time::SystemTime,
    ) -> io::Result<()> {
        for (gz, fp, _) in discover::compressed_siblings(watched, newer_than) {
            let known = self
                .files
                .iter()
                .any(|f| f.identity.fingerprint == Some(fp) && f.watched == watched)
                || self.checkpoints.has_fingerprint(watched, fp);
            if known {
                continue;
            }
            tracing::info!(
                "{}: {} holds lines the checkpoints do not know of: reading it whole",
                watched.display(),
                gz.display()
            );
            self.open_compressed_copy(watched, |x| x == fp, 0)?;
        }
        Ok(())
    }

    /// Opens the rotated sibling `s` from `offset`. False when its name
    /// no longer names that file: logrotate renamed it between the listing
    /// and the open (the caller lists again).
    fn open_rotated_sibling(
        &mut self,
        watched: &Path,
        s: &Sibling,
        offset: u64,
    ) -> io::Result<bool> {
        let file = match discover::open_regular(&s.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let identity = FileIdentity::of(&file)?;
        if identity != s.identity {
            tracing::debug!(
                "{}: {} was renamed while it was opened; looking again",
                watched.display(),
                s.path.display()
            );
            return Ok(false);
        }
        tracing::info!(
            "{}: reading {} from offset {offset}",
            watched.display(),
            s.path.display()
        );
        let mut f =
            TailedFile::with_identity(watched, file, identity, offset, self.options.max_line)?;
        f.state = State::Rotated {
            last_growth: Instant::now(),
        };
        self.follow(f);
        Ok(true)
    }

    /// Opens the file now at `path`, deciding where to start.
    fn open_new(&mut self, path: &Path, first: bool) -> io::Result<()> {
        // Opened once: the start offset is decided for this open file, not
        // for whatever the path names a moment later.
        let file = discover::open_regular(path)?;
        let identity = FileIdentity::of(&file)?;
        let len = file.metadata()?.len();

        let mut start = None;
        if let Some(c) = self.checkpoints.get(&identity).cloned() {
            if c.offset <= len {
                start = Some(c.offset);
            } else {
                // Truncated while we were stopped; finish from the copy.
                self.recover(path, &c)?;
                start = Some(0);
            }
        }
        let rotated_while_stopped = self.finish_rotated_while_stopped(path, &identity)?;
        let reset = first && self.checkpoints.was_reset();
        if first {
            self.adopt_unseen_siblings(path)?;
        }
        // A file without checkpoint starts at its end only when its path
        // was never followed before: a path the agent followed in an earlier
        // run got this content while the agent was responsible for it (a
        // file that was empty at the stop has no checkpoint either).
        let followed_before = self.checkpoints.looked(path).is_some();
        let start = start.unwrap_or(
            if rotated_while_stopped
                || !first
                || reset
                || followed_before
                || self.options.from_beginning
            {
                0
            } else {
                len
            },
        );
        tracing::debug!(
            "{}: following inode {} from offset {start} of {len}",
            path.display(),
            identity.inode
        );
        let f = TailedFile::with_identity(path, file, identity, start, self.options.max_line)?;
        self.follow(f);
        Ok(())
    }

    /// Checkpointed files of `path` that are not the file now there
    /// (`current`) nor open were rotated while the agent was stopped:
    /// finishes them first. True when there were any.
    fn finish_rotated_while_stopped(
        &mut self,
        path: &Path,
        current: &FileIdentity,
    ) -> io::Result<bool> {
        let open_ids: Vec<FileIdentity> = self.files.iter().map(|f| f.identity).collect();
        let checkpoints = self.checkpoints.for_path(path);
        for c in &checkpoints {
            tracing::debug!(
                "{}: checkpoint inode {} {:?} offset {} finished {}",
                path.display(),
                c.inode,
                c.fingerprint,
                c.offset,
                c.finished
            );
        }
        let mut others: Vec<Checkpoint> = checkpoints
            .into_iter()
            .filter(|c| {
                !c.finished && !c.is_for(current) && !open_ids.iter().any(|id| c.is_for(id))
            })
            .collect();
        // Several checkpoints can lead to one file: a file truncated by
        // copytruncate and its copy, each read in part before a crash. The
        // file is read once, from the lowest of them (see `recover`).
        others.sort_by_key(|c| c.offset);
        for c in &others {
            self.recover(path, c)?;
        }
        Ok(!others.is_empty())
    }

    /// At start: rotated files beside `path` the agent never saw, read
    /// whole. Which are unseen depends on what the checkpoints know.
    fn adopt_unseen_siblings(&mut self, path: &Path) -> io::Result<()> {
        // Which siblings are unseen: those last written (less a second of
        // slack) after these times, uncompressed and compressed.
        let (uncompressed, compressed) = match self.checkpoints.loaded() {
            // The checkpoints were lost: every line beside the path may be
            // undelivered. At least once means reading them all again; and
            // compressed rotations written after the lost save, which it
            // cannot have delivered (older ones, kept for days, it had
            // read: reading them all would send days of lines again).
            Loaded::Nothing(lost) => (UNIX_EPOCH, lost),
            // The last save was lost, the one before is in use: rotated
            // files it does not know may hold lines never delivered,
            // whenever they were last written; compressed ones too, if they
            // were compressed after that save.
            Loaded::PreviousSave(saved) => (UNIX_EPOCH, saved),
            // Files rotated beside the path after the agent last looked at
            // it (before it stopped) were never seen; those created,
            // rotated and compressed meanwhile are left only compressed.
            // As the save had it: finishing a checkpoint at this start
            // (`finish_rotated_while_stopped`) makes it new, and would
            // hide every file written before this second.
            Loaded::LastSave => match self.checkpoints.known_at_load(path) {
                Some(secs) => {
                    let t = UNIX_EPOCH + Duration::from_secs(secs);
                    (t, t)
                }
                None => return Ok(()),
            },
        };
        let less_slack = |t: SystemTime| t.checked_sub(MTIME_SLACK).unwrap_or(UNIX_EPOCH);
        self.adopt_newer_siblings(path, less_slack(uncompressed))?;
        self.adopt_compressed_siblings(path, less_slack(compressed))
    }

    /// Finds the file checkpoint `c` describes among the rotated siblings
    /// of `path` and reads it from the checkpoint.
    fn recover(&mut self, path: &Path, c: &Checkpoint) -> io::Result<()> {
        let wanted = c.identity();
        for _ in 0..RENAME_RETRIES {
            let siblings = discover::siblings(&mut self.listings, path)?;
            let same_file = siblings.iter().find(|s| s.identity == wanted);
            let copy = siblings
                .iter()
                .find(|s| s.identity.fingerprint == wanted.fingerprint && s.len >= c.offset);
            let Some(s) = same_file.or(copy).cloned() else {
                return self.recover_compressed(path, c);
            };
            if self
                .files
                .iter()
                .any(|f| f.identity.same_inode(&s.identity))
            {
                // Already being read, from a lower checkpoint of its
                // content: reading it again would send its lines twice.
                if !s.identity.same_inode(&wanted) {
                    self.checkpoints.mark_finished(c);
                }
                return Ok(());
            }
            // While its checkpoint still marks it as known.
            self.adopt_newer_siblings(path, s.modified)?;
            // The renamed file itself is followed as any rotated file, even
            // when read to its end: the server may not have reopened its
            // log yet (a restart in the middle of a rotation), and writes
            // to it for a moment more. A copy is written by nobody.
            let same_file = s.identity.same_inode(&wanted);
            if (same_file || s.len > c.offset) && !self.open_rotated_sibling(path, &s, c.offset)? {
                // Renamed between the listing and the open: look again.
                continue;
            }
            if !same_file {
                // Handed over to the copy (which has a checkpoint of its
                // own from now on), or read to its end in it.
                self.checkpoints.mark_finished(c);
            }
            return Ok(());
        }
        tracing::warn!(
            "{}: the file read up to offset {} before was renamed each time it was opened; it is looked for again at the next start",
            path.display(),
            c.offset
        );
        Ok(())
    }

    /// The file checkpoint `c` describes is not beside `path` as it was:
    /// logrotate may have compressed it (`compress`, `delaycompress`). If it
    /// was read to its end, nothing is left to do; if lines were written to
    /// it after the checkpoint, they are read from its decompressed content.
    /// Only a file found nowhere is reported as possibly lost.
    fn recover_compressed(&mut self, path: &Path, c: &Checkpoint) -> io::Result<()> {
        let found = self.open_compressed_copy(path, |fp| fp == c.fingerprint, c.offset)?;
        if !found {
            tracing::warn!(
                "{}: the file read up to offset {} before (inode {}) is gone (deleted, or compressed in a format the agent does not read); lines written to it after that offset, if any, were not read",
                path.display(),
                c.offset,
                c.inode
            );
        }
        // Read to its end, or handed over to the decompressed copy (which
        // has a checkpoint of its own from now on).
        self.checkpoints.mark_finished(c);
        Ok(())
    }

    /// Looks for a gzip-compressed rotation of `watched` whose content
    /// starts with the first line `wanted` is the fingerprint of: if it is
    /// longer than `offset`, reads it from there (decompressed into an
    /// unnamed temporary file). False when there is no such rotation.
    fn open_compressed_copy(
        &mut self,
        watched: &Path,
        wanted: impl Fn(Fingerprint) -> bool,
        offset: u64,
    ) -> io::Result<bool> {
        let Some((gz, content, len)) = discover::compressed_copy(watched, wanted) else {
            return Ok(false);
        };
        if len <= offset {
            tracing::debug!(
                "{}: {} holds the file read to its end (offset {offset}); nothing left to read",
                watched.display(),
                gz.display()
            );
            return Ok(true);
        }
        tracing::info!(
            "{}: reading {} (compressed meanwhile) from offset {offset} to {len}",
            watched.display(),
            gz.display()
        );
        let mut f = TailedFile::from_file(watched, content, offset, self.options.max_line)?;
        f.state = State::Rotated {
            last_growth: Instant::now(),
        };
        // Nothing writes to a decompressed copy: done at its end.
        f.cannot_grow = true;
        self.follow(f);
        Ok(true)
    }

    /// Reads up to `budget` lines in all, handing each to `emit`. A file
    /// that cannot be read costs only itself: the error is reported
    /// (rate-limited), counted, and the read is tried again at the next poll.
    pub fn poll(
        &mut self,
        budget: usize,
        emit: &mut dyn FnMut(SourceLine<'_>) -> Handling,
    ) -> io::Result<PollOutcome> {
        self.handle_truncations();
        let mut outcome = PollOutcome::default();
        let now = Instant::now();
        // Reads and acknowledgements since the last look may have left
        // files idle.
        self.none_idle = false;
        // Files found truncated after a read, and where their lines not
        // handed out start.
        let mut torn: Vec<(usize, u64)> = Vec::new();
        for i in 0..self.files.len() {
            let left = budget.saturating_sub(outcome.lines);
            match self.files[i].read(left, now, self.options.rotate_wait, emit) {
                Ok(read) => {
                    self.stats.read_bytes(read.bytes);
                    outcome.lines += read.lines;
                    outcome.more |= read.more;
                    if let Some(at) = read.torn_at {
                        torn.push((i, at));
                    }
                }
                Err(e) => self.read_failed(i, &e),
            }
        }
        for (i, at) in torn {
            self.truncated(i, Some(at));
        }
        self.update_checkpoints();
        let waiting = self.deferred.len();
        self.open_deferred();
        // Files just opened have lines to read at once.
        outcome.more |= self.deferred.len() < waiting;
        self.stats.set_files_open(self.files.len() as u64);
        Ok(outcome)
    }

    /// Reading file `i` failed: say so (at most once a minute per file) and
    /// count it; the file stays open and is read again at the next poll.
    fn read_failed(&mut self, i: usize, e: &io::Error) {
        self.read_errors += 1;
        let (watched, at, errors) = (
            self.files[i].watched.clone(),
            self.files[i].read_position(),
            self.read_errors,
        );
        self.report_once_a_minute(&watched, || {
            format!(
                "{}: cannot read at offset {at}: {e}; other files go on, and this one is tried again ({errors} read errors so far)",
                watched.display()
            )
        });
    }

    /// Says once why a file a glob found is not followed.
    fn report_skipped(&mut self, skipped: discover::Skipped) {
        // Bounded: a folder of a million planted links costs no memory.
        if self.skipped_reported.len() >= MAX_SKIPPED_REPORTED
            || !self.skipped_reported.insert(skipped.path.clone())
        {
            return;
        }
        tracing::warn!("{}: not followed: {}", skipped.path.display(), skipped.why);
    }

    /// Logs an error about `path`, at most once a minute per path: a file
    /// that stays unreadable (permissions after a rotation) must not fill
    /// the journal every scan.
    fn report_once_a_minute(&mut self, path: &Path, message: impl FnOnce() -> String) {
        let now = Instant::now();
        let last = self.error_reported.get(path).copied();
        if last.is_none_or(|t| now.duration_since(t) >= ERROR_REPORT_EVERY) {
            tracing::error!("{}", message());
            self.error_reported.insert(path.to_owned(), now);
        }
    }

    /// Reads that failed so far (each is retried).
    pub fn read_errors(&self) -> u64 {
        self.read_errors
    }

    /// The sink delivered every line of `source` that ends at or before
    /// `end`.
    pub fn acknowledge(&mut self, source: u64, end: u64) {
        for f in self.files.iter_mut().filter(|f| f.source() == Some(source)) {
            f.acknowledge(end);
        }
    }

    /// Files truncated (or their content replaced) since the last look are
    /// read again from their start, what was past our offset from the copy.
    fn handle_truncations(&mut self) {
        let truncated: Vec<usize> = (0..self.files.len())
            .filter(|&i| self.files[i].was_truncated())
            .collect();
        for i in truncated {
            self.truncated(i, None);
        }
    }

    /// Gives a checkpoint to open files whose first line was written since
    /// they were opened (see [`TailedFile::learn_identity`]), and notices
    /// files whose content was replaced (copytruncate) since the last look:
    /// the agent calls this about once a second even while it reads
    /// nothing (a full sink), so that new content is checkpointed (at
    /// offset 0) under its own fingerprint before a crash could leave it
    /// unknown, and its copy is found later even once compressed. Cheap: a
    /// file is looked at only when its size or time changed.
    pub fn learn_identities(&mut self) {
        self.handle_truncations();
        for f in &mut self.files {
            f.learn_identity();
        }
        self.update_checkpoints();
    }

    /// Moves checkpoints to what is delivered and closes finished files
    /// whose lines are all delivered.
    pub fn update_checkpoints(&mut self) {
        for f in &self.files {
            self.checkpoints
                .record(&f.identity, &f.watched, f.delivered(), f.is_done());
        }
        self.files.retain(|f| !f.is_done());
    }

    /// Whether some rotated file is waiting out `rotate_wait`.
    pub(crate) fn has_rotated_files(&self) -> bool {
        self.files
            .iter()
            .any(|f| matches!(f.state, State::Rotated { .. }))
    }

    /// Bytes held in partial lines, per path (for `--once` to report).
    pub(crate) fn partial_lines(&self) -> Vec<(PathBuf, usize)> {
        self.files
            .iter()
            .filter(|f| !f.reader.pending().is_empty())
            .map(|f| (f.watched.clone(), f.reader.pending().len()))
            .collect()
    }

    /// Saves checkpoints if they changed (always with `force`, as at
    /// shutdown); forgets stale ones.
    pub fn save_checkpoints(&mut self, force: bool) -> io::Result<()> {
        // Files opened since the last poll (a checkpoint handed over to a
        // rotated copy) must be saved together with the hand-over.
        self.update_checkpoints();
        // Parked files are followed too: their checkpoints must stay.
        let open = self.followed_identities();
        self.checkpoints
            .forget_stale(|c| open.contains(&c.identity()));
        if force {
            self.last_prune = Some(Instant::now());
            self.forget_gone();
        }
        for (path, t) in &self.last_look {
            let secs = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            self.checkpoints.set_looked(path, secs);
        }
        let writes = force || self.checkpoints.is_dirty();
        self.stats
            .set_checkpoint_entries(self.checkpoints.entries() as u64);
        self.checkpoints.save(force)?;
        if writes {
            self.stats.checkpoint_written();
        }
        Ok(())
    }

    /// The files followed: open, and closed while idle (parked).
    fn followed_identities(&self) -> HashSet<FileIdentity> {
        self.files
            .iter()
            .map(|f| f.identity)
            .chain(self.parked.values().map(|p| p.identity))
            .collect()
    }

    /// Forgets what is kept of files that are gone: the checkpoints of
    /// finished files of which no copy is left beside their path (no file
    /// there, renamed, copied or compressed, starts with their first line),
    /// and when paths no value names any more were looked at. Under the kubelet a container
    /// rotates every few seconds when busy; without this the store would
    /// keep an entry per rotation for a week, and rewrite them all at every
    /// save.
    fn forget_gone(&mut self) {
        self.update_checkpoints();
        let open = self.followed_identities();
        for path in self.checkpoints.finished_paths() {
            let siblings = match discover::siblings(&mut self.listings, &path) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                // Unknown: keep them.
                Err(_) => continue,
            };
            // The file now at the path, by its first line (its inode may
            // be one a deleted file had).
            let current = discover::head_fingerprint(&path);
            let compressed: Vec<Fingerprint> = discover::compressed_siblings(&path, UNIX_EPOCH)
                .into_iter()
                .map(|(_, fp, _)| fp)
                .collect();
            let gone = self.checkpoints.forget_finished(&path, |c| {
                let id = c.identity();
                // The file itself, or any copy of its content: renamed,
                // copied (copytruncate) or compressed, whatever its inode.
                open.contains(&id)
                    || current == Some(c.fingerprint)
                    || siblings
                        .iter()
                        .any(|s| s.identity.fingerprint == Some(c.fingerprint))
                    || compressed.contains(&c.fingerprint)
            });
            if gone > 0 {
                tracing::debug!(
                    "{}: forgot {gone} checkpoints of rotated files that are gone",
                    path.display()
                );
            }
        }
        let watched: HashSet<&Path> = self
            .files
            .iter()
            .map(|f| f.watched.as_path())
            .chain(self.parked.keys().map(PathBuf::as_path))
            .collect();
        // A path a value names (a plain path, even before it exists; what
        // a glob matched at the last scan) is kept.
        let named = &self.named;
        self.last_look
            .retain(|p, _| watched.contains(p.as_path()) || named.contains(p));
        let last_look = &self.last_look;
        self.checkpoints
            .retain_looked(|p| last_look.contains_key(p) || named.contains(p));
    }

    /// Whether checkpoints changed since the last save.
    pub(crate) fn checkpoints_dirty(&self) -> bool {
        self.checkpoints.is_dirty()
    }
}

/// The tailer as the agent's loop drives it: files are one kind of
/// [`Source`]; an open file is a part, acknowledged by its number.
impl Source for Tailer {
    fn look(&mut self, why: Look) -> io::Result<()> {
        match why {
            Look::Changed => self.scan(),
            Look::Periodic => self.rescan(),
        }
    }

    fn watch_dirs(&self) -> Vec<PathBuf> {
        Tailer::watch_dirs(self)
    }

    fn poll(
        &mut self,
        budget: usize,
        emit: &mut dyn FnMut(SourceLine<'_>) -> Handling,
    ) -> io::Result<PollOutcome> {
        Tailer::poll(self, budget, emit)
    }

    fn acknowledge(&mut self, part: u64, end: u64) {
        Tailer::acknowledge(self, part, end)
    }

    fn settle(&mut self) {
        self.update_checkpoints()
    }

    fn tick(&mut self) {
        self.learn_identities()
    }

    fn positions_dirty(&self) -> bool {
        self.checkpoints_dirty()
    }

    fn save_positions(&mut self, force: bool) -> io::Result<()> {
        self.save_checkpoints(force)
    }

    fn holds_back(&self) -> bool {
        self.has_rotated_files() || self.has_deferred()
    }

    fn waits_for_room(&self) -> bool {
        self.has_deferred()
    }

    fn origins(&self, visit: &mut dyn FnMut(Origin<'_>)) {
        Tailer::origins(self, visit)
    }

    fn lags(&self) -> Vec<(PathBuf, u64)> {
        Tailer::lags(self)
    }

    fn read_errors(&self) -> u64 {
        Tailer::read_errors(self)
    }

    fn partial_lines(&self) -> Vec<(PathBuf, usize)> {
        Tailer::partial_lines(self)
    }
}
