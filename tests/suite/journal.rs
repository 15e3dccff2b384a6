//! The systemd journal as a source, on journal files written by systemd's
//! own code: `systemd-journal-remote` (Debian's package, installed by
//! tests/setup.sh) turns export-format entries into a `.journal` file, and
//! appends to it while the agent follows it with `--journal-directory`.
//! Several units' entries are interleaved: gunicorn's and uWSGI's access
//! lines among their own messages, nginx's by its syslog identifier, and
//! another service's access lines that must not be read.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agent_process::RunningAgent;
use common::programs::python_backend;

const PATIENCE: Duration = Duration::from_secs(60);

/// A journal folder written with systemd's own writer.
struct Journal {
    dir: tempfile::TempDir,
    written: u64,
}

/// What an entry holds: its unit, its syslog identifier, its message.
struct Entry<'a> {
    unit: Option<&'a str>,
    identifier: Option<&'a str>,
    message: String,
}

impl Journal {
    fn new() -> Self {
        Journal {
            dir: tempfile::tempdir().expect("temp dir"),
            written: 0,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Appends `entries` to `remote.journal` with systemd-journal-remote.
    fn append(&mut self, entries: &[Entry]) {
        let remote = common::programs::installed(
            &[
                "/lib/systemd/systemd-journal-remote",
                "/usr/lib/systemd/systemd-journal-remote",
            ],
            "systemd-journal-remote",
        );
        let mut export = String::new();
        for e in entries {
            self.written += 1;
            // One second apart, from 2026-12-06 10:00:00 UTC.
            let micros = (1_796_551_200 + self.written) * 1_000_000;
            export.push_str(&format!(
                "__REALTIME_TIMESTAMP={micros}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=3a2b0e6b4a1c4c4e9b0b2d7e8f9a0b1c\n_HOSTNAME=web1\n",
                self.written
            ));
            if let Some(u) = e.unit {
                export.push_str(&format!("_SYSTEMD_UNIT={u}\n"));
            }
            if let Some(i) = e.identifier {
                export.push_str(&format!("SYSLOG_IDENTIFIER={i}\n"));
            }
            export.push_str(&format!("MESSAGE={}\n\n", e.message));
        }
        let input = self.dir.path().join("entries.export");
        fs::write(&input, export).expect("write the export");
        let out = Command::new(remote)
            .arg(format!(
                "--output={}",
                self.dir.path().join("remote.journal").display()
            ))
            .arg(&input)
            .output()
            .expect("run systemd-journal-remote");
        assert!(
            out.status.success(),
            "systemd-journal-remote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::remove_file(&input).expect("remove the export");
    }
}

/// Entries `from..to` of every kind, interleaved as a busy host writes
/// them: gunicorn's access lines (`/g/N`) and its own messages, uWSGI's
/// request lines (`/u/N`), nginx's via syslog (`/n/N`), another service's
/// access lines (`/o/N`, not selected) and systemd's.
fn traffic(from: usize, to: usize) -> Vec<Entry<'static>> {
    let mut out = Vec::new();
    for i in from..to {
        out.push(Entry {
            unit: Some("gunicorn.service"),
            identifier: Some("gunicorn"),
            message: format!(
                "10.0.{}.{} - - [06/Dec/2026:10:00:00 +0000] \"GET /g/{i} HTTP/1.1\" 200 5 \"-\" \"curl/8.0\"",
                i / 250 % 250,
                i % 250 + 1
            ),
        });
        if i % 50 == 0 {
            out.push(Entry {
                unit: Some("gunicorn.service"),
                identifier: Some("gunicorn"),
                message: "[2026-12-06 10:00:00 +0000] [7] [INFO] Booting worker with pid: 7".into(),
            });
            out.push(Entry {
                unit: None,
                identifier: Some("systemd"),
                message: "Started session-3.scope - Session 3 of User root.".into(),
            });
        }
        out.push(Entry {
            unit: Some("uwsgi.service"),
            identifier: Some("uwsgi"),
            message: format!(
                "[pid: 30406|app: 0|req: {n}/{n}] 10.1.0.{} () {{30 vars in 435 bytes}} [Sun Dec  6 10:00:00 2026] GET /u/{i} => generated 5 bytes in 3 msecs (HTTP/1.1 200) 3 headers in 126 bytes (1 switches on core 0)",
                i % 250 + 1,
                n = i + 1
            ),
        });
        out.push(Entry {
            unit: Some("nginx.service"),
            identifier: Some("nginx"),
            message: format!(
                "10.2.0.{} - - [06/Dec/2026:10:00:00 +0000] \"GET /n/{i} HTTP/1.1\" 200 5 \"-\" \"curl/8.0\"",
                i % 250 + 1
            ),
        });
        out.push(Entry {
            unit: Some("other.service"),
            identifier: Some("other"),
            message: format!(
                "10.3.0.1 - - [06/Dec/2026:10:00:00 +0000] \"GET /o/{i} HTTP/1.1\" 200 5 \"-\" \"curl/8.0\""
            ),
        });
    }
    out
}

/// The agent following the journal in `journal`, delivering to `port`.
fn start_agent(journal: &Path, state: &Path, port: u16, log: &Path) -> std::process::Child {
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    Command::new(common::agent_bin())
        .args(["--journal-directory"])
        .arg(journal)
        .args([
            "--journal-unit",
            "gunicorn.service",
            "--journal-unit",
            "uwsgi.service=uwsgi",
            "--journal-identifier",
            "nginx=nginx_combined",
            "--from-beginning",
            "--secret-key",
            "journal-test-key",
            "--pattern-dir",
            "/nonexistent",
            "--ws-url",
            &format!("ws://127.0.0.1:{port}/"),
        ])
        .arg("--state-dir")
        .arg(state)
        .env("CERBERUS_LOG_FILTER", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start the agent")
}

/// What the backend stored: per endpoint, the event_ids it came with.
fn stored(received: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let text = fs::read_to_string(received).unwrap_or_default();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let endpoint = e["endpoint"].as_str().unwrap_or_default().to_owned();
        let id = e["event_id"].as_str().unwrap_or_default().to_owned();
        out.entry(endpoint).or_default().insert(id);
    }
    out
}

fn wait_until(what: &str, log: &Path, done: impl FnMut() -> bool) {
    common::wait_until(
        what,
        PATIENCE,
        || fs::read_to_string(log).unwrap_or_default(),
        done,
    );
}

/// The agent following gunicorn.service in `journal` with `--stdout`
/// (`extra` flags besides), once it said it is ready.
fn follow_gunicorn(journal: &Journal, state: &Path, extra: &[&str]) -> RunningAgent {
    let dir = journal.path().display().to_string();
    let mut args = vec![
        "--journal-directory",
        &dir,
        "--journal-unit",
        "gunicorn.service=gunicorn",
        "--pattern-dir",
        "/nonexistent",
    ];
    args.extend_from_slice(extra);
    RunningAgent::start(state, &args)
}

/// The endpoints of what the agent printed, in order.
fn endpoints_of(agent: &RunningAgent) -> Vec<String> {
    agent
        .seen
        .iter()
        .filter_map(|e| e["endpoint"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_selected_units_access_lines_reach_a_real_backend_once_through_kill_and_restarts() {
    let mut journal = Journal::new();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let received = work.path().join("received.jsonl");
    let log = work.path().join("agent.log");
    let port = common::free_port();
    let mut backend = python_backend(port, &received, &["--wire", "batch"]);

    journal.append(&traffic(0, 300));
    let mut agent = start_agent(journal.path(), state.path(), port, &log);
    let delivered = |n: usize| {
        let got = stored(&received);
        (0..n).all(|i| got.contains_key(&format!("/g/{i}")) && got.contains_key(&format!("/n/{i}")))
    };
    wait_until("the first 300 of each", &log, || delivered(300));
    // Their acknowledgements moved the saved cursor.
    wait_until("a saved cursor", &log, || {
        fs::read_dir(state.path())
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".cursor"))
            })
            .unwrap_or(false)
    });

    // The backend goes away; the agent reads on and cannot deliver; it is
    // killed. At its restart the backlog (hundreds of entries after the
    // saved cursor) is read again and sent, the backend back.
    let _ = backend.kill();
    let _ = backend.wait();
    journal.append(&traffic(300, 600));
    agent.kill().expect("kill -9");
    let _ = agent.wait();
    let mut agent = start_agent(journal.path(), state.path(), port, &log);
    journal.append(&traffic(600, 700));
    let mut backend = python_backend(port, &received, &["--wire", "batch"]);
    journal.append(&traffic(700, 900));

    let expected: BTreeSet<String> = (0..900)
        .flat_map(|i| [format!("/g/{i}"), format!("/u/{i}"), format!("/n/{i}")])
        .collect();
    wait_until("every access line", &log, || {
        let got = stored(&received);
        expected.iter().all(|e| got.contains_key(e))
    });
    common::agent_process::send_sigterm(agent.id());
    let _ = agent.wait();
    let _ = backend.kill();
    let _ = backend.wait();

    let got = stored(&received);
    let endpoints: BTreeSet<String> = got.keys().cloned().collect();
    assert_eq!(
        endpoints, expected,
        "exactly the selected units' access lines (no /o/, no other messages)"
    );
    let mut ids = BTreeSet::new();
    for (endpoint, event_ids) in &got {
        assert_eq!(
            event_ids.len(),
            1,
            "{endpoint} came again with another event_id: {event_ids:?}"
        );
        assert!(
            ids.insert(event_ids.iter().next().cloned()),
            "{endpoint}: an event_id shared"
        );
    }
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("ERROR"), "{text}");
}

#[test]
fn a_saved_position_the_journal_no_longer_holds_is_reported() {
    let mut journal = Journal::new();
    let state = tempfile::tempdir().unwrap();
    journal.append(&traffic(0, 20));
    let args = |journal: &Path| -> Vec<String> {
        vec![
            "--journal-directory".into(),
            journal.display().to_string(),
            "--journal-unit".into(),
            "gunicorn.service".into(),
            "--once".into(),
            "--stdout".into(),
            "--state-dir".into(),
            state.path().display().to_string(),
            "--pattern-dir".into(),
            "/nonexistent".into(),
        ]
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::programs::run_agent(&args, &[])
    };
    let first = run(&args(journal.path()));
    assert_eq!(
        common::programs::printed_events(&first.stdout).len(),
        20,
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // Vacuumed while the agent was stopped: the file that held the saved
    // entry is gone, a newer one holds what came since.
    fs::remove_file(journal.path().join("remote.journal")).unwrap();
    journal.append(&traffic(20, 25));
    let second = run(&args(journal.path()));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("no longer holds the saved position"),
        "{stderr}"
    );
    let events = common::programs::printed_events(&second.stdout);
    let endpoints: Vec<&str> = events
        .iter()
        .filter_map(|e| e["endpoint"].as_str())
        .collect();
    assert_eq!(
        endpoints,
        (20..25).map(|i| format!("/g/{i}")).collect::<Vec<_>>()
    );

    // Read on from there: nothing is repeated, nothing is reported again.
    let third = run(&args(journal.path()));
    assert!(common::programs::printed_events(&third.stdout).is_empty());
    assert!(!String::from_utf8_lossy(&third.stderr).contains("no longer holds"));
}

/// A journal entry whose access line logs no time (uvicorn's) takes the
/// entry's own time.
#[test]
fn an_access_line_without_a_time_takes_the_entrys() {
    let mut journal = Journal::new();
    journal.append(&[Entry {
        unit: Some("uvicorn.service"),
        identifier: Some("uvicorn"),
        message: "INFO:     127.0.0.1:50862 - \"GET /hello HTTP/1.1\" 200 OK".into(),
    }]);
    let dir: PathBuf = journal.path().to_owned();
    let out = common::programs::run_agent(
        &[
            "--journal-directory",
            dir.to_str().unwrap(),
            "--journal-unit",
            "uvicorn.service=uvicorn",
            "--once",
            "--stdout",
            "--no-checkpoints",
            "--pattern-dir",
            "/nonexistent",
        ],
        &[],
    );
    let events = common::programs::printed_events(&out.stdout);
    assert_eq!(events.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(events[0]["endpoint"], "/hello");
    // The first entry written: 2026-12-06 10:00:01 UTC.
    assert_eq!(events[0]["timestamp"], "2026-12-06T10:00:01+00:00");
}

/// `check --journal-unit` shows what the agent makes of a unit's entries:
/// the access lines read, the server's own messages counted apart.
#[test]
fn check_shows_what_a_unit_wrote() {
    let mut journal = Journal::new();
    journal.append(&traffic(0, 60));
    let dir = journal.path().display().to_string();
    let out = common::programs::run_agent(
        &[
            "check",
            "--journal-unit",
            "gunicorn.service",
            "--journal-directory",
            &dir,
            "--format",
            "gunicorn",
            "--pattern-dir",
            "/nonexistent",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("journal:gunicorn.service: its last 62 entries"),
        "{stdout}"
    );
    assert!(stdout.contains("\"endpoint\":\"/g/59\""), "{stdout}");
    assert!(stdout.contains("parsed: 60, failed: 2"), "{stdout}");
}

/// journalctl dying (killed, the journal unreadable a moment) costs
/// nothing: it is started again after the last entry read, with back-off.
#[test]
fn a_dead_journalctl_is_started_again_and_nothing_is_lost_or_repeated() {
    let mut journal = Journal::new();
    let state = tempfile::tempdir().unwrap();
    journal.append(&traffic(0, 30));
    let mut agent = follow_gunicorn(&journal, state.path(), &["--from-beginning"]);
    agent.wait_for(30, PATIENCE);
    let children = fs::read_to_string(format!(
        "/proc/{pid}/task/{pid}/children",
        pid = agent.child.id()
    ))
    .unwrap_or_default();
    let journalctl: u32 = children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "journalctl")
        })
        .expect("the agent runs journalctl");
    common::agent_process::send_signal(journalctl, 9);
    journal.append(&traffic(30, 60));
    let stderr_path = state.path().join("agent.stderr");
    let started = Instant::now();
    while agent.seen.len() < 60 && started.elapsed() < PATIENCE {
        agent.drain(Duration::from_millis(100));
    }
    assert!(
        agent.seen.len() >= 60,
        "{} of 60 events: {}",
        agent.seen.len(),
        fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    agent.drain(Duration::from_millis(300));
    let endpoints = endpoints_of(&agent);
    assert_eq!(
        endpoints,
        (0..60).map(|i| format!("/g/{i}")).collect::<Vec<_>>(),
        "each once, in order"
    );
    let stderr = fs::read_to_string(state.path().join("agent.stderr")).unwrap_or_default();
    assert!(stderr.contains("journalctl ended"), "{stderr}");
}

/// Without a checkpoint the journal is read from now on: what was there
/// before the agent started is not sent, and every entry written once it
/// said it is ready is, however late journalctl gets to the journal's end.
#[test]
fn from_now_on_means_every_entry_written_after_ready() {
    let mut journal = Journal::new();
    let state = tempfile::tempdir().unwrap();
    journal.append(&traffic(0, 20));
    let mut agent = follow_gunicorn(&journal, state.path(), &[]);
    journal.append(&traffic(20, 40));
    agent.wait_for(20, PATIENCE);
    agent.drain(Duration::from_millis(300));
    let endpoints = endpoints_of(&agent);
    assert_eq!(
        endpoints,
        (20..40).map(|i| format!("/g/{i}")).collect::<Vec<_>>()
    );
}

/// A reload that adds a program to read restarts the journal reader in
/// place: the units read so far go on without a repeat, and the new one is
/// read from where the journal had been read to (here just after /g/19,
/// which nginx's /n/19 follows).
#[test]
fn a_reload_adds_a_selection_without_repeating_the_others() {
    let mut journal = Journal::new();
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("agent.toml");
    let journal_dir = journal.path().display().to_string();
    let write_config = |with_nginx: bool| {
        let mut text = format!(
            "journal_directory = {journal_dir:?}\njournal_unit = [\"gunicorn.service=gunicorn\"]\npattern_dirs = []\n"
        );
        if with_nginx {
            text.push_str("journal_identifier = [\"nginx=nginx_combined\"]\n");
        }
        let tmp = state.path().join("agent.toml.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &config).unwrap();
    };
    write_config(false);
    journal.append(&traffic(0, 20));
    let config_arg = config.display().to_string();
    let mut agent =
        RunningAgent::start(state.path(), &["--config", &config_arg, "--from-beginning"]);
    agent.wait_for(20, PATIENCE);

    write_config(true);
    common::agent_process::send_signal(agent.child.id(), 1);
    let stderr_path = state.path().join("agent.stderr");
    let start = Instant::now();
    while !fs::read_to_string(&stderr_path)
        .unwrap_or_default()
        .contains("configuration reloaded")
    {
        assert!(start.elapsed() < PATIENCE, "no reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    journal.append(&traffic(20, 40));
    agent.wait_for(61, PATIENCE);
    agent.drain(Duration::from_millis(300));
    let got: BTreeSet<String> = endpoints_of(&agent).into_iter().collect();
    let expected: BTreeSet<String> = (0..40)
        .map(|i| format!("/g/{i}"))
        .chain((19..40).map(|i| format!("/n/{i}")))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(agent.seen.len(), 61, "no line twice");
}

/// A message longer than max_line_bytes is cut there and counted, as a
/// file's long line is: what journalctl prints never grows the agent's
/// memory past its limits, and the next entries are read.
#[test]
fn a_huge_message_is_cut_and_counted() {
    let mut journal = Journal::new();
    let mut entries = vec![Entry {
        unit: Some("gunicorn.service"),
        identifier: Some("gunicorn"),
        message: format!("10.0.0.1 - - [{}", "x".repeat(300_000)),
    }];
    entries.extend(
        traffic(0, 3)
            .into_iter()
            .filter(|e| e.unit == Some("gunicorn.service")),
    );
    journal.append(&entries);
    let dir = journal.path().display().to_string();
    let out = common::programs::run_agent(
        &[
            "--journal-directory",
            &dir,
            "--journal-unit",
            "gunicorn.service=gunicorn",
            "--once",
            "--stdout",
            "--no-checkpoints",
            "--pattern-dir",
            "/nonexistent",
        ],
        &[("CERBERUS_MAX_LINE_BYTES", "4096")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let endpoints: Vec<String> = common::programs::printed_events(&out.stdout)
        .iter()
        .filter_map(|e| e["endpoint"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(endpoints, ["/g/0", "/g/1", "/g/2"], "{stderr}");
    assert!(stderr.contains("1 cut at max_line_bytes"), "{stderr}");
}
