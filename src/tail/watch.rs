//! Wake the agent when watched folders change (inotify, through `notify`).
//!
//! Folders are watched rather than files: a folder sees its files being
//! written, created, renamed and deleted, which covers every way of
//! rotation. Events are reduced to [`Wake`] messages; the agent's loop
//! blocks on them, so an idle agent uses no CPU. Access events (opens,
//! reads, including the agent's own) are ignored, or the agent would wake
//! itself.

use std::path::PathBuf;
use std::sync::mpsc::Sender;

use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

/// Why the agent's loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A watched file was written to.
    Data,
    /// Files were created, renamed or deleted: scan the paths again.
    Structure,
    /// SIGTERM or SIGINT.
    Shutdown,
    /// The sender has acknowledgements to hand over.
    Acked,
    /// The sender took a batch: there is room to send again.
    Space,
}

/// Watches folders and sends [`Wake`]s.
pub struct DirWatcher {
    watcher: notify::RecommendedWatcher,
    watched: Vec<PathBuf>,
}

impl DirWatcher {
    pub fn new(tx: Sender<Wake>) -> notify::Result<Self> {
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
            let _ = tx.send(wake);
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
        let mut failed = Vec::new();
        for dir in dirs {
            if self.watched.contains(dir) || !dir.is_dir() {
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
