//! Model-based test of the tailer (in the manner of Vector's file-source
//! tests): proptest draws random sequences of file-system and agent actions,
//! an interpreter applies them to real files and a real `Tailer`, and the
//! output is checked against a model of what must come out.
//!
//! The model: every line written must come out; exactly once when the
//! agent was only ever stopped gracefully (and held no unacknowledged line
//! at a stop), at least once when it was killed or its checkpoint file was
//! cut; nothing else (no fragments) may come out; a line that comes out
//! again keeps its `event_id`. Only acknowledgements move checkpoints: a
//! line handed out and not acknowledged when the agent stops comes out
//! again after the restart. Acknowledgements may be withheld for a while
//! (those of later lines then wait behind them, as the delivery side
//! does: an acknowledgement covers every line before it) and given last
//! first. Rotated files may be compressed (renamed, then
//! gzipped and the uncompressed file removed, as logrotate's `compress`,
//! which gives the `.gz` the time its file was last written).
//!
//! A kill leaves the agent down until an action needs it (a poll, a
//! restart, a truncate): the server writes, rotates, copies and compresses
//! meanwhile, as it does while a crashed agent waits for systemd to
//! restart it; with `downtime`, the stop lasts 100 s (the checkpoints were
//! saved, and the files written, that long before what follows).
//!
//! Constraints that mirror what a real server and logrotate do: lines are
//! written to the old file after a rename only until the agent restarts or
//! the file is rotated again (a server reopens within moments); the agent
//! catches up just before a plain truncate or delete (anything written and
//! truncated away unseen is lost by definition, not by the agent).

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use cerberus_agent::tail::TailOptions;
use common::tail_harness::Harness;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Write(usize),
    WriteOld(usize),
    Poll {
        save: bool,
    },
    /// A poll whose lines the backend does not acknowledge yet.
    PollHolding,
    /// The backend acknowledges the held lines (in order, or last first).
    AckHeld {
        out_of_order: bool,
    },
    RotateRename,
    /// The file renamed away last is compressed and removed; when the
    /// server writes none (after copytruncate), the newest rotated file
    /// not compressed yet (delaycompress compressing the copy). Before
    /// it, a running agent has looked (inotify) and, unless its sink was
    /// full, read.
    CompressOld {
        read_first: bool,
    },
    /// A crash that leaves the checkpoint file cut in half.
    KillCuttingCheckpoints {
        downtime: bool,
    },
    RotateCopyTruncate,
    Truncate,
    Delete,
    /// A graceful stop and start; with `downtime`, 100 s pass between
    /// them (checkpoints saved and files written that long ago).
    Restart {
        downtime: bool,
    },
    Kill {
        downtime: bool,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (1usize..6).prop_map(Action::Write),
        2 => (1usize..4).prop_map(Action::WriteOld),
        4 => any::<bool>().prop_map(|save| Action::Poll { save }),
        2 => Just(Action::PollHolding),
        2 => any::<bool>().prop_map(|out_of_order| Action::AckHeld { out_of_order }),
        2 => Just(Action::RotateRename),
        1 => any::<bool>().prop_map(|read_first| Action::CompressOld { read_first }),
        1 => any::<bool>().prop_map(|downtime| Action::KillCuttingCheckpoints { downtime }),
        1 => Just(Action::RotateCopyTruncate),
        1 => Just(Action::Truncate),
        1 => Just(Action::Delete),
        1 => any::<bool>().prop_map(|downtime| Action::Restart { downtime }),
        1 => any::<bool>().prop_map(|downtime| Action::Kill { downtime }),
    ]
}

struct Model {
    next: usize,
    written: Vec<String>,
    /// The file renamed away last, while the server may still write to it.
    old: Option<PathBuf>,
    killed: bool,
    /// The agent is down (killed) and not started again yet.
    stopped: bool,
    /// Lines not acknowledged when the agent stopped: they must come out
    /// again (and so may come out twice).
    resent: Vec<String>,
}

impl Model {
    fn lines(&mut self, n: usize) -> Vec<String> {
        let out: Vec<String> = (0..n)
            .map(|i| format!("line-{:06}", self.next + i))
            .collect();
        self.next += n;
        self.written.extend(out.iter().cloned());
        out
    }
}

/// Makes room for a new rotation as logrotate does: every rotated file
/// `access.log.N` (or `.N.gz`) becomes `N + 1`, highest first (the file
/// the server may still write, `old`, too); the new rotation's name,
/// `access.log.1`.
fn make_room(dir: &std::path::Path, old: &mut Option<PathBuf>) -> PathBuf {
    let mut rotated: Vec<(usize, bool)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let rest = name.strip_prefix("access.log.")?;
            let (n, gz) = match rest.strip_suffix(".gz") {
                Some(n) => (n, true),
                None => (rest, false),
            };
            Some((n.parse().ok()?, gz))
        })
        .collect();
    rotated.sort_unstable_by(|a, b| b.cmp(a));
    let name =
        |n: usize, gz: bool| dir.join(format!("access.log.{n}{}", if gz { ".gz" } else { "" }));
    for (n, gz) in rotated {
        let (from, to) = (name(n, gz), name(n + 1, gz));
        fs::rename(&from, &to).unwrap();
        if old.as_ref() == Some(&from) {
            *old = Some(to);
        }
    }
    name(1, false)
}

/// How long a stop with downtime lasts: well past the agent's one-second
/// slack on file times.
const DOWNTIME_SECS: u64 = 100;

fn run(actions: &[Action]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(TailOptions {
        rotate_wait: Duration::from_secs(3600),
        from_beginning: true,
        max_rotated_open: 1000,
        ..TailOptions::default()
    });
    let log = h.log.clone();
    let mut m = Model {
        next: 0,
        written: Vec::new(),
        old: None,
        killed: false,
        stopped: false,
        resent: Vec::new(),
    };
    // kill -9 of a running agent, a crash cutting its checkpoint file if
    // `cut`; it stays down until an action needs it.
    let kill = |h: &mut Harness, m: &mut Model, downtime: bool, cut: bool| {
        if m.stopped {
            return;
        }
        h.kill();
        if cut && h.state.path().join("checkpoints.json").exists() {
            h.cut_checkpoint_file();
        }
        if downtime {
            h.pass_time_while_stopped(DOWNTIME_SECS);
        }
        m.killed = true;
        m.stopped = true;
        m.old = None;
    };
    // An action that needs the agent starts it again after a kill.
    let started = |h: &mut Harness, m: &mut Model| {
        if m.stopped {
            h.start();
            m.stopped = false;
        }
    };
    h.start();
    for a in actions {
        match a {
            Action::Write(n) => {
                let lines = m.lines(*n);
                h.append(&log, &lines);
            }
            Action::WriteOld(n) => {
                if let Some(old) = m.old.clone() {
                    let lines = m.lines(*n);
                    h.append(&old, &lines);
                }
            }
            // Acknowledgements are cumulative (`Tailer::acknowledge`: every
            // line up to an end): while a line is held, the delivery side
            // holds back those of the lines after it (the outbox does).
            Action::Poll { save } => {
                started(&mut h, &mut m);
                if h.held.is_empty() {
                    h.poll(*save);
                } else {
                    h.poll_acking(*save, |_| false);
                }
            }
            Action::PollHolding => {
                started(&mut h, &mut m);
                h.poll_acking(false, |_| false);
            }
            Action::AckHeld { out_of_order } => {
                started(&mut h, &mut m);
                h.acknowledge_held(*out_of_order);
            }
            Action::CompressOld { read_first } => {
                let old = m.old.take().or_else(|| {
                    (1..)
                        .map(|n| h.dir.path().join(format!("access.log.{n}")))
                        .take(64)
                        .find(|p| p.exists())
                });
                if let Some(old) = old {
                    // The server has reopened by now (logrotate's
                    // delaycompress, or a rotation's postrotate signal),
                    // and the agent, woken by the rename (inotify), has
                    // looked: a file compressed before any agent saw it
                    // is a new file to it. (A stopped agent has not.)
                    if m.stopped {
                    } else if !read_first {
                        h.look();
                    } else if h.held.is_empty() {
                        h.poll(false);
                    } else {
                        h.poll_acking(false, |_| false);
                    }
                    let mut gz = flate2::write::GzEncoder::new(
                        fs::File::create(old.with_extension(format!(
                            "{}.gz",
                            old.extension().and_then(|e| e.to_str()).unwrap_or("")
                        )))
                        .unwrap(),
                        flate2::Compression::fast(),
                    );
                    std::io::copy(&mut fs::File::open(&old).unwrap(), &mut gz).unwrap();
                    let gz = gz.finish().unwrap();
                    // logrotate gives the .gz the time its file was last
                    // written.
                    gz.set_modified(fs::metadata(&old).unwrap().modified().unwrap())
                        .unwrap();
                    fs::remove_file(&old).unwrap();
                }
            }
            Action::KillCuttingCheckpoints { downtime } => kill(&mut h, &mut m, *downtime, true),
            Action::RotateRename => {
                if log.exists() {
                    let to = make_room(h.dir.path(), &mut m.old);
                    fs::rename(&log, &to).unwrap();
                    fs::write(&log, b"").unwrap();
                    m.old = Some(to);
                }
            }
            Action::RotateCopyTruncate => {
                if !m.stopped {
                    h.acknowledge_held(false);
                }
                if log.exists() {
                    let to = make_room(h.dir.path(), &mut m.old);
                    h.copy(&log, &to);
                    h.truncate(&log);
                    m.old = None;
                }
            }
            Action::Truncate => {
                // The backend caught up: what was written before is gone.
                started(&mut h, &mut m);
                h.acknowledge_held(false);
                h.poll(true);
                if log.exists() {
                    h.truncate(&log);
                }
                m.old = None;
            }
            Action::Delete => {
                started(&mut h, &mut m);
                h.acknowledge_held(false);
                h.poll(true);
                if log.exists() {
                    fs::remove_file(&log).unwrap();
                }
                m.old = None;
            }
            Action::Restart { downtime } => {
                if m.stopped {
                    started(&mut h, &mut m);
                } else {
                    m.resent.extend(h.held.iter().map(|(_, _, l)| l.clone()));
                    h.stop();
                    if *downtime {
                        h.pass_time_while_stopped(DOWNTIME_SECS);
                    }
                    h.start();
                }
                m.old = None;
            }
            Action::Kill { downtime } => kill(&mut h, &mut m, *downtime, false),
        }
    }
    started(&mut h, &mut m);
    h.acknowledge_held(false);
    h.poll(true);

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &h.out {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    for l in &m.written {
        let n = counts.get(l.as_str()).copied().unwrap_or(0);
        prop_assert!(n >= 1, "line {} was lost; out: {:?}", l, h.out);
        if m.resent.contains(l) {
            prop_assert!(
                n >= 2,
                "line {} was not acknowledged before a stop, yet did not come out again",
                l
            );
        } else if !m.killed {
            prop_assert_eq!(n, 1, "line {} came out {} times without a kill", l, n);
        }
    }
    let unstable = h.unstable_ids();
    prop_assert!(
        unstable.is_empty(),
        "lines that came out again with another event_id: {:?}",
        unstable
    );
    for l in &h.out {
        prop_assert!(
            m.written.contains(l),
            "{:?} came out but was never written as a line",
            l
        );
    }
    Ok(())
}

proptest! {
    // 200 cases in CI (about a second); PROPTEST_CASES=20000 to hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
        max_shrink_iters: 2000,
        .. ProptestConfig::default()
    })]

    #[test]
    fn every_written_line_comes_out(actions in proptest::collection::vec(action(), 1..40)) {
        run(&actions)?;
    }
}
