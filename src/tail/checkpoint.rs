//! Checkpoints: per file, the offset below which every line is delivered.
//!
//! A checkpoint moves only when the sink acknowledges (see [`super::Tailer`]);
//! it is the only thing that survives a restart. The store is one JSON file,
//! `checkpoints.json` in the state folder, replaced atomically (write a temp
//! file, fsync, rename, fsync the folder) about once a second while things
//! change and at shutdown. A file that cannot be read back (corrupt,
//! truncated by a crash of the filesystem, edited by hand) is reported and
//! set aside under a new name, never a crash: the agent then starts as if
//! it had no checkpoints.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::identity::{FileIdentity, Fingerprint};

/// The store's file name inside the state folder.
pub(crate) const FILE_NAME: &str = "checkpoints.json";
/// The store as it was before the last save, kept in case the store itself
/// is damaged.
pub(crate) const PREVIOUS_FILE_NAME: &str = "checkpoints.json.prev";

/// Checkpoints of files not seen for this long are forgotten.
pub(crate) const FORGET_AFTER_SECS: u64 = 7 * 24 * 3600;

/// One file's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub device: u64,
    pub inode: u64,
    /// Fingerprint of the first line.
    pub fingerprint: Fingerprint,
    /// The watched path the file was found under (it may have been renamed
    /// since, by rotation).
    pub path: PathBuf,
    /// Every line below this byte offset is delivered.
    pub offset: u64,
    /// The file was read to its end after it was rotated away: nothing
    /// more will ever be read from it.
    #[serde(default)]
    pub finished: bool,
    /// Seconds since the epoch of the last update.
    pub updated: u64,
}

impl Checkpoint {
    /// The file this checkpoint belongs to.
    pub fn identity(&self) -> FileIdentity {
        FileIdentity {
            device: self.device,
            inode: self.inode,
            fingerprint: Some(self.fingerprint),
        }
    }

    /// True when this checkpoint belongs to the file `id`.
    pub(crate) fn is_for(&self, id: &FileIdentity) -> bool {
        self.identity() == *id
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    files: Vec<Checkpoint>,
    /// Per watched path, when the agent last looked at it (seconds since
    /// the epoch): files rotated beside it later were never seen.
    #[serde(default)]
    paths: BTreeMap<PathBuf, u64>,
}

/// All checkpoints, in memory, with the file they are saved to.
#[derive(Debug)]
pub struct CheckpointStore {
    /// `None` when checkpoints are disabled.
    file: Option<PathBuf>,
    /// By the identity of their file (always with a fingerprint).
    entries: BTreeMap<FileIdentity, Checkpoint>,
    looked: BTreeMap<PathBuf, u64>,
    /// Per watched path, the latest time the loaded save records for it
    /// (the last update of one of its checkpoints, or the last look at
    /// it): fixed at load, whatever this run changes afterwards.
    known_at_load: BTreeMap<PathBuf, u64>,
    dirty: bool,
    loaded: Loaded,
}

/// What a [`CheckpointStore`] was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loaded {
    /// The last save, or none (a first start).
    LastSave,
    /// The last save was unreadable; the one before it, written at this
    /// time, is in use: what happened after it is not in it.
    PreviousSave(SystemTime),
    /// Both were unreadable: what was delivered is unknown. The lost save
    /// was written at this time (the epoch when that is unknown too).
    Nothing(SystemTime),
}

/// Seconds since the epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CheckpointStore {
    /// A store that remembers nothing (`--no-checkpoints`).
    pub(crate) fn disabled() -> Self {
        CheckpointStore {
            file: None,
            entries: BTreeMap::new(),
            looked: BTreeMap::new(),
            known_at_load: BTreeMap::new(),
            dirty: false,
            loaded: Loaded::LastSave,
        }
    }

    /// Opens the store in `state_dir`, creating the folder. A store file
    /// that cannot be parsed is renamed aside and reported.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(state_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create the state folder {}: {e}",
                    state_dir.display()
                ),
            )
        })?;
        let file = state_dir.join(FILE_NAME);
        let mut store = CheckpointStore {
            file: Some(file.clone()),
            entries: BTreeMap::new(),
            looked: BTreeMap::new(),
            known_at_load: BTreeMap::new(),
            dirty: false,
            loaded: Loaded::LastSave,
        };
        let saved = match read_store(&file)? {
            Some(Ok(saved)) => Some(saved),
            None => None,
            Some(Err(e)) => {
                // When the unreadable store was written: what was written
                // to the logs after it cannot have been delivered before it.
                let written = fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH);
                let aside = state_dir.join(format!("{FILE_NAME}.corrupt-{}", now_secs()));
                let moved = match fs::rename(&file, &aside) {
                    Ok(()) => format!("moved it to {}", aside.display()),
                    Err(m) => format!("could not move it aside ({m})"),
                };
                // The store as it was one save before (about a second):
                // its offsets are at or below what was delivered, so lines
                // are at most sent again, never skipped.
                let previous = state_dir.join(PREVIOUS_FILE_NAME);
                match read_store(&previous) {
                    Ok(Some(Ok(saved))) => {
                        store.loaded = Loaded::PreviousSave(
                            fs::metadata(&previous)
                                .and_then(|m| m.modified())
                                .unwrap_or(UNIX_EPOCH),
                        );
                        tracing::error!(
                            "checkpoint file {} is unreadable ({e}); {moved}; resuming from the previous save ({}): lines delivered since then are sent again with their event_id, so the backend can drop the repeats",
                            file.display(),
                            previous.display()
                        );
                        Some(saved)
                    }
                    _ => {
                        store.loaded = Loaded::Nothing(written);
                        tracing::error!(
                            "checkpoint file {} is unreadable ({e}), and so is the previous save; {moved}; what was delivered is unknown, so the files are read again from their start (lines sent before keep their event_id, so the backend can drop the repeats)",
                            file.display()
                        );
                        None
                    }
                }
            }
        };
        if let Some(saved) = saved {
            for c in saved.files {
                store.entries.insert(c.identity(), c);
            }
            store.looked = saved.paths;
            for c in store.entries.values() {
                let t = store.known_at_load.entry(c.path.clone()).or_default();
                *t = (*t).max(c.updated);
            }
            for (path, looked) in &store.looked {
                let t = store.known_at_load.entry(path.clone()).or_default();
                *t = (*t).max(*looked);
            }
        }
        Ok(store)
    }

    /// Whether the saved store was unreadable and set aside: nothing is
    /// known of what was delivered before.
    pub(crate) fn was_reset(&self) -> bool {
        matches!(self.loaded, Loaded::Nothing(_))
    }

    /// What the store was loaded from.
    pub(crate) fn loaded(&self) -> Loaded {
        self.loaded
    }

    /// The checkpoint of the file `id`, if any.
    pub fn get(&self, id: &FileIdentity) -> Option<&Checkpoint> {
        self.entries.get(id)
    }

    /// When the agent last looked at the watched `path`, as saved.
    pub fn looked(&self, path: &Path) -> Option<u64> {
        self.looked.get(path).copied()
    }

    /// Until when the loaded save knew the files of the watched `path`
    /// (seconds since the epoch): files last written before then were
    /// known to it, so a file beside the path that it does not know and
    /// that was written later appeared while the agent was not saving.
    /// Taken as loaded: a checkpoint this run updated (one it finished at
    /// start, say) says nothing of what the save knew.
    pub(crate) fn known_at_load(&self, path: &Path) -> Option<u64> {
        self.known_at_load.get(path).copied()
    }

    /// Notes when the agent looked at `path`; saved with the next save (this
    /// alone does not make the store need saving).
    pub(crate) fn set_looked(&mut self, path: &Path, secs: u64) {
        self.looked.insert(path.to_owned(), secs);
    }

    /// Whether some checkpoint of a file found under `path` has this
    /// fingerprint (another log's file that starts with the same line, say
    /// two logs of one health check, is not a copy).
    pub(crate) fn has_fingerprint(&self, path: &Path, fp: Fingerprint) -> bool {
        self.entries
            .values()
            .any(|c| c.fingerprint == fp && c.path == path)
    }

    /// Checkpoints recorded under the watched `path`.
    pub(crate) fn for_path(&self, path: &Path) -> Vec<Checkpoint> {
        self.entries
            .values()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// Records that everything below `offset` of file `id` is delivered.
    /// A file without fingerprint (no complete first line) has nothing
    /// delivered yet and gets no checkpoint.
    pub fn record(&mut self, id: &FileIdentity, path: &Path, offset: u64, finished: bool) {
        let Some(fp) = id.fingerprint else { return };
        let c = Checkpoint {
            device: id.device,
            inode: id.inode,
            fingerprint: fp,
            path: path.to_owned(),
            offset,
            finished,
            updated: now_secs(),
        };
        let k = c.identity();
        let unchanged = self.entries.get(&k).is_some_and(|old| {
            old.offset == c.offset && old.finished == c.finished && old.path == c.path
        });
        if !unchanged {
            self.entries.insert(k, c);
            self.dirty = true;
        }
    }

    /// Marks a file as read to its end: it is not looked for again, and is
    /// remembered (by fingerprint) until it is forgotten with the others.
    pub(crate) fn mark_finished(&mut self, c: &Checkpoint) {
        if let Some(entry) = self.entries.get_mut(&c.identity())
            && !entry.finished
        {
            entry.finished = true;
            entry.updated = now_secs();
            self.dirty = true;
        }
    }

    /// Forgets checkpoints not updated for [`FORGET_AFTER_SECS`], except
    /// those `keep` says are in use. Finished files are remembered that long
    /// too: their fingerprints tell their copies from new files.
    pub(crate) fn forget_stale(&mut self, keep: impl Fn(&Checkpoint) -> bool) {
        let cutoff = now_secs().saturating_sub(FORGET_AFTER_SECS);
        let before = self.entries.len();
        self.entries.retain(|_, c| c.updated >= cutoff || keep(c));
        if self.entries.len() != before {
            self.dirty = true;
        }
    }

    /// The watched paths that have checkpoints of finished files.
    pub(crate) fn finished_paths(&self) -> std::collections::BTreeSet<PathBuf> {
        self.entries
            .values()
            .filter(|c| c.finished)
            .map(|c| c.path.clone())
            .collect()
    }

    /// Forgets the checkpoints of finished files under `path` that
    /// `present` says are gone (the file and every compressed copy of it):
    /// nothing more can be read from them, and no copy is left to be told
    /// from a new file. The number forgotten.
    pub(crate) fn forget_finished(
        &mut self,
        path: &Path,
        present: impl Fn(&Checkpoint) -> bool,
    ) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, c| !(c.finished && c.path == path && !present(c)));
        let gone = before - self.entries.len();
        if gone > 0 {
            self.dirty = true;
        }
        gone
    }

    /// Forgets when paths were looked at, except those `keep` names and
    /// those with checkpoints.
    pub(crate) fn retain_looked(&mut self, keep: impl Fn(&Path) -> bool) {
        let with_checkpoints: std::collections::BTreeSet<&PathBuf> =
            self.entries.values().map(|c| &c.path).collect();
        let before = self.looked.len();
        self.looked
            .retain(|p, _| with_checkpoints.contains(p) || keep(p));
        if self.looked.len() != before {
            self.dirty = true;
        }
    }

    /// How many files the store remembers.
    pub(crate) fn entries(&self) -> usize {
        self.entries.len()
    }

    /// True when there is something not yet saved.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the store atomically if anything changed, or always with
    /// `force` (at shutdown, to record when paths were last looked at).
    pub fn save(&mut self, force: bool) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty && !force {
            return Ok(());
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
        let body = StoreFile {
            version: 1,
            files: self.entries.values().cloned().collect(),
            paths: self.looked.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&body).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        // The store being replaced stays as the previous save. Linked, not
        // renamed: the store's name never stops naming a complete store.
        let previous = dir.join(PREVIOUS_FILE_NAME);
        let replaces = file.exists();
        if replaces {
            let _ = fs::remove_file(&previous);
            if fs::hard_link(file, &previous).is_err() {
                fs::copy(file, &previous)?;
            }
        }
        fs::rename(&tmp, file)?;
        if !replaces {
            // The first save, or the first since an unreadable store was
            // set aside (a `.prev` left then is the unreadable one): a copy
            // of it is the previous save, so that a crash that damages it
            // still leaves a store to resume from. A copy, not a link: a
            // link would be damaged with it. The save itself is done: a
            // copy that fails (a full disk) is left out, not half written.
            let _ = fs::remove_file(&previous);
            let copied = fs::copy(file, &previous).and_then(|_| File::open(&previous)?.sync_all());
            if copied.is_err() {
                let _ = fs::remove_file(&previous);
            }
        }
        // The renames are durable only once the folder is synced.
        File::open(dir)?.sync_all()?;
        self.dirty = false;
        Ok(())
    }
}

/// The store saved at `path`: `None` if there is none, the parse error if
/// it is damaged.
fn read_store(path: &Path) -> io::Result<Option<Result<StoreFile, serde_json::Error>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice::<StoreFile>(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read checkpoint file {}: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(inode: u64, first_line: u8) -> FileIdentity {
        FileIdentity {
            device: 1,
            inode,
            fingerprint: Fingerprint::of_head(&[first_line, b'\n']),
        }
    }

    #[test]
    fn saved_checkpoints_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CheckpointStore::open(dir.path()).unwrap();
        s.record(&id(5, 9), Path::new("/l/a.log"), 120, false);
        s.save(false).unwrap();
        let s = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&id(5, 9)).map(|c| c.offset), Some(120));
        assert!(
            s.get(&id(5, 8)).is_none(),
            "inode reuse with other content is another file"
        );
        assert_eq!(s.for_path(Path::new("/l/a.log")).len(), 1);
    }

    #[test]
    fn a_damaged_store_falls_back_to_the_previous_save() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CheckpointStore::open(dir.path()).unwrap();
        s.record(&id(5, 9), Path::new("/l/a.log"), 100, false);
        s.save(false).unwrap();
        s.record(&id(5, 9), Path::new("/l/a.log"), 200, false);
        s.save(false).unwrap();
        // A crash of the filesystem cuts the store in half.
        let path = dir.path().join(FILE_NAME);
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();

        let s = CheckpointStore::open(dir.path()).unwrap();
        assert!(!s.was_reset(), "what was delivered is still known");
        assert_eq!(
            s.get(&id(5, 9)).map(|c| c.offset),
            Some(100),
            "the previous save: at most a second of lines is sent again"
        );
    }

    #[test]
    fn the_first_save_after_an_unreadable_store_can_be_fallen_back_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        // Both saves unreadable: the store starts empty, and sets them aside.
        fs::write(&path, b"{\"vers").unwrap();
        fs::write(dir.path().join(PREVIOUS_FILE_NAME), b"{\"vers").unwrap();
        let mut s = CheckpointStore::open(dir.path()).unwrap();
        assert!(s.was_reset());
        s.record(&id(5, 9), Path::new("/l/a.log"), 100, false);
        s.save(false).unwrap();
        // Another crash cuts the only save made since.
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();

        let s = CheckpointStore::open(dir.path()).unwrap();
        assert!(!s.was_reset(), "what was delivered is still known");
        assert_eq!(s.get(&id(5, 9)).map(|c| c.offset), Some(100));
    }

    #[test]
    fn a_corrupt_store_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(FILE_NAME),
            b"{\"version\":1,\"files\":[{\"dev",
        )
        .unwrap();
        let s = CheckpointStore::open(dir.path()).unwrap();
        assert!(s.get(&id(5, 9)).is_none());
        let aside = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(aside, "the corrupt file is kept for inspection");
    }

    #[test]
    fn a_first_line_is_known_per_path_and_gone_files_are_forgotten() {
        let mut s = CheckpointStore::disabled();
        let (a, b) = (Path::new("/l/a.log"), Path::new("/l/b.log"));
        s.record(&id(1, 1), a, 10, true);
        s.record(&id(2, 2), a, 10, false);
        let fp = id(1, 1).fingerprint.unwrap();
        assert!(s.has_fingerprint(a, fp));
        assert!(
            !s.has_fingerprint(b, fp),
            "another log's file starting with the same line is not a copy"
        );
        // Only finished files are forgotten, and only those said gone.
        assert_eq!(s.forget_finished(a, |c| c.inode == 1), 0);
        assert_eq!(s.forget_finished(a, |_| false), 1);
        assert!(s.get(&id(1, 1)).is_none());
        assert!(s.get(&id(2, 2)).is_some(), "not finished: kept");
        assert!(s.is_dirty());
    }

    #[test]
    fn old_checkpoints_are_forgotten_unless_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CheckpointStore::open(dir.path()).unwrap();
        s.record(&id(1, 1), Path::new("/a"), 10, true);
        s.record(&id(2, 2), Path::new("/a"), 10, false);
        s.record(&id(3, 3), Path::new("/a"), 10, false);
        for c in s.entries.values_mut() {
            c.updated -= FORGET_AFTER_SECS + 1;
        }
        s.record(&id(2, 2), Path::new("/a"), 11, false);
        s.forget_stale(|c| c.inode == 3);
        assert!(s.get(&id(1, 1)).is_none());
        assert!(s.get(&id(2, 2)).is_some(), "recently updated");
        assert!(s.get(&id(3, 3)).is_some(), "in use");
    }
}
