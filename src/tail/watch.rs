//! Wake the agent when watched folders change (inotify, through `notify`).
//!
//! Folders are watched rather than files: a folder sees its files being
//! written, created, renamed and deleted, which covers every way of
//! rotation. Events are reduced to [`Wake`] reasons, coalesced by the
//! [`Waker`] (a burst of writes is one wake-up); the agent's loop blocks on
//! them, so an idle agent uses no CPU. Access events (opens,
//! reads, including the agent's own) are ignored, or the agent would wake
//! itself.

use std::path::PathBuf;

use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

use crate::wake::{Wake, Waker};

/// Watches folders and wakes the agent's loop.
pub(crate) struct DirWatcher {
    watcher: notify::RecommendedWatcher,
    watched: Vec<PathBuf>,
}

impl DirWatcher {
    pub fn new(waker: Waker) -> notify::Result<Self> {
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let wake = match res {
                Ok(event) => match event.kind {
                    EventKind::Access(_) => return,
                    EventKind::Modify(ModifyKind::Data(_)) => Wake::Data,
                    EventKind::Modify(ModifyKind::Metadata(_)) => return,
                    _ => Wake::Structure,
                },
                // Queue overflow and the like: a scan finds what was missed.
                Err(_) => Wake::Structure,
            };
            waker.wake(wake);
        })?;
        Ok(DirWatcher {
            watcher,
            watched: Vec::new(),
        })
    }

    /// Watches `dirs` that exist and are not watched yet; returns the ones
    /// that could not be watched (missing folders are retried by the caller
    /// at each scan).
    pub fn watch(&mut self, dirs: &[PathBuf]) -> Vec<(PathBuf, notify::Error)> {
        // Folders no longer wanted (a deleted pod's) are let go, so the
        // watches do not pile up over the agent's life.
        let wanted: std::collections::HashSet<&PathBuf> = dirs.iter().collect();
        let watcher = &mut self.watcher;
        self.watched.retain(|dir| {
            let keep = wanted.contains(dir);
            if !keep {
                let _ = watcher.unwatch(dir);
            }
            keep
        });
        let mut failed = Vec::new();
        let watching: std::collections::HashSet<PathBuf> = self.watched.iter().cloned().collect();
        for dir in dirs {
            if watching.contains(dir) || !dir.is_dir() {
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => self.watched.push(dir.clone()),
                Err(e) => failed.push((dir.clone(), e)),
            }
        }
        failed
    }
}
