//! What the tailer did, for the metrics: atomics the agent's loop updates
//! and the metrics thread reads.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The tailer's counters and gauges.
#[derive(Debug, Default)]
pub struct TailStats {
    /// Files open (live and rotated ones being finished).
    pub files_open: AtomicU64,
    /// Rotations and truncations seen.
    pub rotations: AtomicU64,
    pub checkpoint_writes: AtomicU64,
    /// Files the checkpoint store remembers, at the last save.
    pub checkpoint_entries: AtomicU64,
    /// Bytes read from the files (lines handed out or skipped).
    pub bytes_read: AtomicU64,
    /// Watched files the agent may not read, at the last look.
    pub unreadable: AtomicU64,
    /// Per live file, bytes written and not yet delivered (set by the
    /// agent's loop about once a second).
    pub lag: Mutex<Vec<(PathBuf, u64)>>,
}

impl TailStats {
    pub fn rotated(&self) {
        self.rotations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read_bytes(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn checkpoint_written(&self) {
        self.checkpoint_writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_checkpoint_entries(&self, n: u64) {
        self.checkpoint_entries.store(n, Ordering::Relaxed);
    }

    pub(crate) fn set_files_open(&self, n: u64) {
        self.files_open.store(n, Ordering::Relaxed);
    }

    pub(crate) fn set_unreadable(&self, n: u64) {
        self.unreadable.store(n, Ordering::Relaxed);
    }

    pub(crate) fn set_lag(&self, lag: Vec<(PathBuf, u64)>) {
        if let Ok(mut l) = self.lag.lock() {
            *l = lag;
        }
    }
}
