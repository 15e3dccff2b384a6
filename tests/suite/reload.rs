//! Reload: `systemctl reload` sends SIGHUP, and the agent applies the
//! configuration file as it is now. The real binary, two real WebSocket
//! backends on 127.0.0.1, and a writer appending to a log the whole time:
//! across a bad configuration, a change of log files and backend, and a
//! changed pattern, every line arrives once and only where it should.

use crate::common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::agent_process::{access_line, id_of, send_signal, send_sigterm};
use common::backend::{Backend, Behaviour, Seen};
use serde_json::Value;

const SIGHUP: i32 = 1;
const PATIENCE: Duration = Duration::from_secs(30);

/// The user's pattern: nginx's combined format, with a scheme to tell
/// which version of the file parsed a line.
fn write_pattern(dir: &Path, scheme: &str) {
    let text = format!(
        r#"description = "combined, scheme {scheme}"
timestamp_format = "%d/%b/%Y:%H:%M:%S %z"
default_scheme = "{scheme}"

[split]
kind = "template"
escape = "nginx"
template = '''$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"'''

[fields]
client_ip = "remote_addr"
request = "request"
timestamp = "time_local"
status = "status"
bytes_sent = "body_bytes_sent"
user_agent = "http_user_agent"
"#
    );
    // Written whole and renamed: the agent never reads half a file.
    let tmp = dir.join("mine.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("mine.toml")).unwrap();
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("patterns")).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        write_pattern(&dir.path().join("patterns"), "http");
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self, logs: &[&str], url: &str, shutdown_ms: u64) {
        let logs: Vec<String> = logs
            .iter()
            .map(|l| format!("{:?}", self.path(l).display().to_string()))
            .collect();
        let text = format!(
            "log = [{}]\nformat = \"mine\"\npattern_dirs = [{:?}]\nws_url = \"{url}\"\nstate_dir = {:?}\nbatch_linger_ms = 20\nshutdown_timeout_ms = {shutdown_ms}\nsecret_key = \"k\"\n",
            logs.join(", "),
            self.path("patterns").display().to_string(),
            self.path("state").display().to_string(),
        );
        let tmp = self.path("agent.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path("agent.toml")).unwrap();
    }

    fn start(&self) -> Child {
        let stderr = std::fs::File::create(self.path("agent.stderr")).unwrap();
        Command::new(common::agent_bin())
            .arg("--config")
            .arg(self.path("agent.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start cerberus-agent")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("agent.stderr")).unwrap_or_default()
    }

    /// Waits until the agent's log says `what` `n` times.
    fn wait_for_log(&self, what: &str, n: usize) {
        let started = Instant::now();
        while self.stderr().matches(what).count() < n {
            assert!(
                started.elapsed() < PATIENCE,
                "the agent never said {what:?} {n} times; it said:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn append(&self, name: &str, ids: std::ops::Range<usize>) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap();
        let text: String = ids.map(access_line).collect();
        f.write_all(text.as_bytes()).unwrap();
    }
}

/// Appends one line to `a.log` every millisecond or so until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let (s, w) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let mut id = 0;
            while !s.load(Ordering::Relaxed) {
                f.write_all(access_line(id).as_bytes()).unwrap();
                id += 1;
                w.store(id, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Writer {
            stop,
            written,
            thread: Some(thread),
        }
    }

    /// Stops writing; returns how many lines were written.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.written.load(Ordering::Relaxed)
    }
}

fn ids(seen: &Seen) -> Vec<usize> {
    seen.events.lock().unwrap().iter().map(id_of).collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How often each id arrived, over both backends, and each `event_id`.
fn tally(backends: &[&Seen]) -> (HashMap<usize, usize>, HashMap<String, usize>) {
    let mut by_id = HashMap::new();
    let mut by_event_id = HashMap::new();
    for seen in backends {
        for id in ids(seen) {
            *by_id.entry(id).or_insert(0) += 1;
        }
        for (event_id, n) in seen.counts() {
            *by_event_id.entry(event_id).or_insert(0) += n;
        }
    }
    (by_id, by_event_id)
}

fn scheme_of(backends: &[&Seen], id: usize) -> Option<bool> {
    backends.iter().find_map(|seen| {
        let events = seen.events.lock().unwrap();
        events
            .iter()
            .find(|e| id_of(e) == id)
            .and_then(|e: &Value| e["scheme"].as_bool())
    })
}

#[test]
fn sighup_applies_new_logs_backend_and_pattern_without_losing_or_repeating_a_line() {
    let first = Backend::start(0, Seen::new(Behaviour::default()), None);
    let second = Backend::start(0, Seen::new(Behaviour::default()), None);
    let setup = Setup::new();
    setup.append("b.log", 100_000..100_050);
    setup.write_config(&["a.log", "b.log"], &first.url("ws"), 5000);
    let mut agent = setup.start();
    // b.log's lines were there before the start, without a checkpoint: the
    // agent starts at the end of such files; lines appended now arrive.
    // a.log appears after the start: it is read from its first line.
    setup.wait_for_log(common::agent_process::READY, 1);
    let writer = Writer::start(setup.path("a.log"));
    setup.append("b.log", 100_050..100_100);
    wait_until("b.log's lines at the first backend", || {
        ids(&first.seen).contains(&100_099)
    });

    // A configuration that does not load: reported, the old one stays.
    std::fs::write(setup.path("agent.toml"), "log = [\n").unwrap();
    send_signal(agent.id(), SIGHUP);
    setup.wait_for_log("the configuration in force stays", 1);
    setup.append("b.log", 100_100..100_110);
    wait_until("b.log still followed after the bad reload", || {
        ids(&first.seen).contains(&100_109)
    });
    assert!(
        agent.try_wait().unwrap().is_none(),
        "a bad config stopped the agent"
    );

    // b.log out, c.log in, the second backend.
    setup.append("c.log", 200_000..200_010);
    setup.write_config(&["a.log", "c.log"], &second.url("ws"), 5000);
    send_signal(agent.id(), SIGHUP);
    setup.wait_for_log("configuration reloaded", 1);
    setup.append("b.log", 100_200..100_210);
    setup.append("c.log", 200_100..200_120);
    wait_until("c.log's new lines at the second backend", || {
        ids(&second.seen).contains(&200_119)
    });

    // Only the pattern changes: applied in place, from the next line.
    write_pattern(&setup.path("patterns"), "https");
    send_signal(agent.id(), SIGHUP);
    setup.wait_for_log("configuration reloaded", 2);
    setup.append("c.log", 200_200..200_220);
    wait_until("c.log's last lines", || {
        ids(&second.seen).contains(&200_219)
    });

    let written = writer.finish();
    wait_until("every line of a.log", || {
        let (by_id, _) = tally(&[&first.seen, &second.seen]);
        (0..written).all(|id| by_id.contains_key(&id))
    });
    send_sigterm(agent.id());
    let status = agent.wait().unwrap();
    let log = setup.stderr();
    assert_eq!(status.code(), Some(0), "agent log:\n{log}");

    let backends = [&*first.seen, &*second.seen];
    let (by_id, by_event_id) = tally(&backends);
    let repeated: Vec<_> = by_event_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "event_ids repeated: {repeated:?}\n{log}"
    );
    for id in (0..written).chain(100_050..100_110).chain(200_100..200_120) {
        assert_eq!(
            by_id.get(&id),
            Some(&1),
            "line {id} arrived not exactly once\n{log}"
        );
    }
    for id in (100_000..100_050)
        .chain(100_200..100_210)
        .chain(200_000..200_010)
    {
        assert_eq!(
            by_id.get(&id),
            None,
            "line {id} should not have been read\n{log}"
        );
    }
    assert!(
        ids(&first.seen).iter().all(|id| *id < 200_000),
        "c.log went to the old backend"
    );
    assert!(
        ids(&second.seen)
            .iter()
            .all(|id| !(100_000..200_000).contains(id)),
        "b.log went to the new backend"
    );
    assert_eq!(scheme_of(&backends, 200_119), Some(false));
    assert_eq!(scheme_of(&backends, 200_200), Some(true));
    assert_eq!(scheme_of(&backends, 200_219), Some(true));
    assert!(!log.contains("\"k\""), "the secret key reached the log");
}

#[test]
fn a_reload_away_from_a_backend_that_never_acknowledges_delivers_everything_to_the_new_one() {
    let silent = Backend::start(
        0,
        Seen::new(Behaviour {
            silent: true,
            ..Behaviour::default()
        }),
        None,
    );
    let second = Backend::start(0, Seen::new(Behaviour::default()), None);
    let setup = Setup::new();
    setup.write_config(&["a.log"], &silent.url("ws"), 500);
    // The old sender, if it went on, would send its batches again after
    // this long without an acknowledgement: within the test.
    let mut config = std::fs::read_to_string(setup.path("agent.toml")).unwrap();
    config.push_str("ack_timeout_ms = 300\n");
    std::fs::write(setup.path("agent.toml"), &config).unwrap();
    setup.append("a.log", 0..1);
    let mut agent = setup.start();
    setup.wait_for_log(common::agent_process::READY, 1);
    setup.append("a.log", 1..200);
    wait_until("the silent backend got lines", || {
        ids(&silent.seen).contains(&199)
    });

    setup.write_config(&["a.log"], &second.url("ws"), 500);
    send_signal(agent.id(), SIGHUP);
    setup.wait_for_log("configuration reloaded", 1);
    let at_reload = silent.seen.event_count();
    setup.append("a.log", 200..300);
    wait_until("every line at the new backend", || {
        let got = ids(&second.seen);
        (1..300).all(|id| got.contains(&id))
    });
    std::thread::sleep(Duration::from_millis(1000));
    send_sigterm(agent.id());
    let status = agent.wait().unwrap();
    let log = setup.stderr();
    assert_eq!(status.code(), Some(0), "agent log:\n{log}");
    assert!(log.contains("read again after the reload"), "{log}");
    // What the old backend never acknowledged went to the new one, once,
    // with the same event_id.
    let counts = second.seen.counts();
    assert!(
        counts.values().all(|n| *n == 1),
        "repeats at the new backend"
    );
    let old: Vec<String> = silent.seen.counts().into_keys().collect();
    assert!(old.iter().all(|id| counts.contains_key(id)), "lost lines");
    // And the old sender stopped: nothing more reached the silent backend
    // after the reload.
    assert_eq!(silent.seen.event_count(), at_reload);
}
