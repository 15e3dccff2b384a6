//! Drives a [`Tailer`] by hand over a temporary folder, as the agent's loop
//! would (scan, poll, acknowledge, save), and records what came out.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cerberus_agent::source::Handling;
use cerberus_agent::tail::CheckpointStore;
use cerberus_agent::tail::{TailOptions, Tailer};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub log: PathBuf,
    pub tailer: Option<Tailer>,
    /// Every line that came out, in order.
    pub out: Vec<String>,
    /// For each line in `out`, the `event_id` it got: (stream, offset).
    pub ids: Vec<(u64, u64)>,
    /// Lines handed out and not acknowledged yet: (file number, end, line).
    pub held: Vec<(u64, u64, String)>,
    pub options: TailOptions,
}

impl Harness {
    /// A harness watching `access.log` in a new folder; the agent starts
    /// with `options` (logs filled in).
    pub fn new(mut options: TailOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("access.log");
        options.logs = vec![log.display().to_string()];
        Harness {
            dir,
            state,
            log,
            tailer: None,
            out: Vec::new(),
            ids: Vec::new(),
            held: Vec::new(),
            options,
        }
    }

    pub fn start(&mut self) {
        let store = CheckpointStore::open(self.state.path()).expect("checkpoint store");
        let mut t = Tailer::new(self.options.clone(), store);
        t.scan().expect("first scan");
        self.tailer = Some(t);
    }

    /// What the agent does when woken: scan, read everything, deliver,
    /// acknowledge; saves checkpoints when `save`.
    pub fn poll(&mut self, save: bool) {
        self.poll_acking(save, |_| true);
    }

    /// What the agent does when woken with a full sink: it looks at its
    /// files (new ones, rotations, truncations) and reads nothing.
    pub fn look(&mut self) {
        let t = self.tailer.as_mut().expect("started");
        t.scan().expect("scan");
        t.learn_identities();
    }

    /// As [`Harness::poll`], but acknowledges only the lines for which
    /// `ack(line)` is true (the others stay in flight, as when a backend
    /// has not answered yet).
    pub fn poll_acking(&mut self, save: bool, mut ack: impl FnMut(&str) -> bool) {
        let t = self.tailer.as_mut().expect("started");
        t.scan().expect("scan");
        loop {
            let mut acks = Vec::new();
            let (out, ids, held) = (&mut self.out, &mut self.ids, &mut self.held);
            let o = t
                .poll(1000, &mut |l| {
                    let text = String::from_utf8_lossy(l.line.bytes).into_owned();
                    if ack(&text) {
                        acks.push((l.part, l.line.end));
                    } else {
                        held.push((l.part, l.line.end, text.clone()));
                    }
                    out.push(text);
                    ids.push((l.stream, l.line.offset));
                    Handling::Pending
                })
                .expect("poll");
            for (s, e) in acks {
                t.acknowledge(s, e);
            }
            t.update_checkpoints();
            if !o.more {
                break;
            }
        }
        if save {
            t.save_checkpoints(false).expect("save");
        }
    }

    /// The backend acknowledges the held lines at last: in order, or last
    /// first (acknowledgements of several connections arrive in any order).
    pub fn acknowledge_held(&mut self, out_of_order: bool) {
        let t = self.tailer.as_mut().expect("started");
        let mut held = std::mem::take(&mut self.held);
        if out_of_order {
            held.reverse();
        }
        for (source, end, _) in held {
            t.acknowledge(source, end);
        }
        t.update_checkpoints();
    }

    /// Graceful stop: everything delivered is checkpointed.
    pub fn stop(&mut self) {
        self.held.clear();
        if let Some(mut t) = self.tailer.take() {
            t.update_checkpoints();
            t.save_checkpoints(true).expect("save");
        }
    }

    /// A crash of the filesystem: the checkpoint file cut in half.
    pub fn cut_checkpoint_file(&self) {
        let saved = self.state.path().join("checkpoints.json");
        let text = fs::read(&saved).expect("a saved checkpoint file");
        let written = fs::metadata(&saved)
            .and_then(|m| m.modified())
            .expect("mtime");
        fs::write(&saved, &text[..text.len() / 2]).expect("cut it");
        // Cut when it was written, not later.
        set_mtime(&saved, written);
    }

    /// The agent's last saves happened `secs` seconds earlier than they
    /// did (it was stopped that long): every time the checkpoint files
    /// record, and their own times, are moved back.
    pub fn age_checkpoints(&self, secs: u64) {
        for name in ["checkpoints.json", "checkpoints.json.prev"] {
            let saved = self.state.path().join(name);
            let Ok(text) = fs::read(&saved) else { continue };
            let modified = fs::metadata(&saved)
                .and_then(|m| m.modified())
                .expect("mtime");
            let earlier = modified - Duration::from_secs(secs);
            // A file cut by a crash keeps its text; only its time moves.
            let Ok(mut store) = serde_json::from_slice::<serde_json::Value>(&text) else {
                set_mtime(&saved, earlier);
                continue;
            };
            for c in store["files"].as_array_mut().expect("files").iter_mut() {
                let t = c["updated"].as_u64().expect("updated");
                c["updated"] = (t - secs).into();
            }
            if let Some(paths) = store["paths"].as_object_mut() {
                for t in paths.values_mut() {
                    *t = (t.as_u64().expect("looked") - secs).into();
                }
            }
            // Replaced in place: `.prev` is a hard link to an older save.
            fs::write(&saved, serde_json::to_vec(&store).expect("JSON")).expect("rewrite it");
            set_mtime(&saved, earlier);
        }
    }

    /// Time passes while the agent is stopped: the checkpoints were saved
    /// `secs` seconds ago, and every log file was written that much
    /// earlier than it was.
    pub fn pass_time_while_stopped(&self, secs: u64) {
        assert!(self.tailer.is_none(), "only while stopped");
        self.age_checkpoints(secs);
        for entry in fs::read_dir(self.dir.path()).expect("log folder") {
            let path = entry.expect("entry").path();
            let modified = fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime");
            set_mtime(&path, modified - Duration::from_secs(secs));
        }
    }

    /// Sets the time `path` was last written to `secs` seconds ago.
    pub fn written_ago(&self, path: &Path, secs: u64) {
        set_mtime(
            path,
            std::time::SystemTime::now() - Duration::from_secs(secs),
        );
    }

    /// kill -9: whatever was saved last stands.
    pub fn kill(&mut self) {
        self.held.clear();
        self.tailer = None;
    }

    pub fn append(&self, path: &Path, lines: &[String]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        for l in lines {
            writeln!(f, "{l}").expect("write");
        }
    }

    pub fn write_raw(&self, path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(bytes).expect("write");
    }

    pub fn rotated(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("access.log.{n}"))
    }

    pub fn truncate(&self, path: &Path) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open")
            .set_len(0)
            .expect("truncate");
    }

    /// How often each line came out.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in &self.out {
            *m.entry(l.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Lines that came out more than once with different `event_id`s.
    pub fn unstable_ids(&self) -> Vec<String> {
        let mut first: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut bad = Vec::new();
        for (line, id) in self.out.iter().zip(&self.ids) {
            if *first.entry(line).or_insert(*id) != *id {
                bad.push(line.clone());
            }
        }
        bad
    }

    pub fn copy(&self, from: &Path, to: &Path) {
        fs::copy(from, to).expect("copy");
    }
}

/// Sets the time `path` was last written.
pub fn set_mtime(path: &Path, t: std::time::SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .expect("set mtime");
}

/// Lines `prefix-0` … `prefix-(n-1)`.
pub fn lines(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Options for deterministic tests: rotated files are finished as soon as
/// they stop growing, unless the test says otherwise.
pub fn quick() -> TailOptions {
    TailOptions {
        rotate_wait: Duration::ZERO,
        from_beginning: true,
        ..TailOptions::default()
    }
}
