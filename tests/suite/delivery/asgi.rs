//! Delivery to the servers a Cerberus backend runs on: a Django Channels
//! consumer (tests/peers/channels_backend.py) under daphne, uvicorn (each
//! of its WebSocket implementations) and hypercorn, installed from PyPI by
//! tests/setup.sh. Each refuses a message above its limit in its own way
//! (uvicorn closes with 1009 or resets, daphne resets the connection
//! without a close frame); none of that may stop delivery, lose an event,
//! or credit an event whose reply never came.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Setup, common, wait_exit, ws_config};

unsafe extern "C" {
    fn dup2(old: i32, new: i32) -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
}

/// fcntl(2)'s F_SETFD: set a descriptor's flags (0: no close-on-exec).
const F_SETFD: i32 = 2;

/// One of the ASGI servers, with its arguments.
#[derive(Debug, Clone)]
struct Server {
    name: &'static str,
    args: Vec<String>,
}

impl Server {
    fn daphne(extra: &[&str]) -> Self {
        Server {
            name: "daphne",
            args: ["--fd", "3"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn uvicorn(ws: &str, extra: &[&str]) -> Self {
        Server {
            name: "uvicorn",
            args: ["--fd", "3", "--ws", ws, "--log-level", "warning"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn hypercorn() -> Self {
        Server {
            name: "hypercorn",
            args: vec!["--bind".into(), "fd://3".into()],
        }
    }
}

/// A running ASGI server on a socket the test bound (port 0: no race for
/// a port; connections wait in its backlog until the server accepts, and
/// across a restart).
struct AsgiBackend {
    listener: TcpListener,
    child: Option<Child>,
    received: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl AsgiBackend {
    fn start(dir: &Path, server: &Server, env: &[(&str, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let received = dir.join("received.jsonl");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "CERBERUS_PEER_OUT".into(),
            received.to_str().expect("utf-8 path").into(),
        ));
        let mut backend = AsgiBackend {
            listener,
            child: None,
            received,
            log: dir.join(format!("{}.log", server.name)),
            env,
        };
        backend.run(server);
        backend
    }

    /// Starts `server` on the socket (again).
    fn run(&mut self, server: &Server) {
        let bin = common::repo()
            .join("target/test-venv/bin")
            .join(server.name);
        assert!(
            bin.exists(),
            "{} is missing: tests/setup.sh installs it",
            bin.display()
        );
        let fd = self.listener.as_raw_fd();
        let mut command = Command::new(&bin);
        command
            .args(&server.args)
            .arg("channels_backend:application")
            .current_dir(common::repo().join("tests/peers"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file(&self.log))
            .stderr(log_file(&self.log));
        // SAFETY: dup2 and fcntl are async-signal-safe; they make the
        // listening socket the child's descriptor 3, kept across exec (dup2
        // onto itself would keep close-on-exec, hence fcntl then).
        unsafe {
            command.pre_exec(move || {
                let done = if fd == 3 {
                    fcntl(3, F_SETFD, 0)
                } else {
                    dup2(fd, 3)
                };
                if done < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(command.spawn().expect("start the ASGI server"));
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        let port = self.listener.local_addr().expect("bound").port();
        format!("ws://127.0.0.1:{port}/ingest")
    }

    /// Events stored so far.
    fn events(&self) -> Vec<Value> {
        match fs::read_to_string(&self.received) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("stored event"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AsgiBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_file(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("server log")
}

/// Stored events by their line's id (`/item/N`): how often, and under
/// which `event_id`s.
fn by_line(events: &[Value]) -> BTreeMap<usize, (usize, BTreeSet<String>)> {
    let mut lines: BTreeMap<usize, (usize, BTreeSet<String>)> = BTreeMap::new();
    for e in events {
        let id = common::agent_process::id_of(e);
        let entry = lines.entry(id).or_default();
        entry.0 += 1;
        entry
            .1
            .insert(e["event_id"].as_str().expect("event_id").to_owned());
    }
    lines
}

/// Every line in `ids` stored exactly once, and nothing else.
fn assert_exactly_once(events: &[Value], ids: impl Iterator<Item = usize>, case: &str) {
    let lines = by_line(events);
    let expected: BTreeSet<usize> = ids.collect();
    let missing: Vec<_> = expected.iter().filter(|i| !lines.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{case}: lines never stored: {missing:?}"
    );
    let twice: Vec<_> = lines.iter().filter(|(_, (n, _))| *n > 1).collect();
    assert!(twice.is_empty(), "{case}: lines stored twice: {twice:?}");
    assert_eq!(lines.len(), expected.len(), "{case}: unexpected lines");
}

/// (1) A backend whose message limit (64 KiB) is below the agent's default
/// batches (128 KiB): every event arrives exactly once, with every one of
/// uvicorn's WebSocket implementations.
#[test]
fn a_backend_with_a_64_kib_limit_gets_every_event_of_default_batches() {
    for ws in ["websockets", "websockets-sansio", "wsproto"] {
        let s = Setup::new(3000);
        let backend = AsgiBackend::start(
            s.dir.path(),
            &Server::uvicorn(ws, &["--ws-max-size", "65536"]),
            &[],
        );
        let mut agent = s.agent(&ws_config(&backend.url(), ""), &["--once"]);
        let code = finish(&mut agent, Duration::from_secs(120), &s, &backend);
        let case = format!("uvicorn --ws {ws}");
        assert_eq!(
            code,
            Some(0),
            "{case}: {}\nserver: {}",
            s.stderr(),
            backend.log()
        );
        let case = format!("{case}\nagent: {}", s.stderr());
        assert_exactly_once(&backend.events(), 0..3000, &case);
        assert!(
            s.stderr().contains("sending at most"),
            "{case}: the limit is learnt and said: {}",
            s.stderr()
        );
    }
}

/// An access line whose user agent makes its event `bytes` long.
fn big_line(id: usize, bytes: usize) -> String {
    format!(
        "10.9.9.9 - - [25/Nov/2026:10:04:05 +0000] \"GET /item/{id} HTTP/1.1\" 200 5 \"-\" \"{}\"\n",
        "A".repeat(bytes)
    )
}

/// (2) One event of 1.5 MB among 3,000 to daphne (1 MiB limit; it resets
/// the connection without a close frame): the other 2,999 arrive exactly
/// once, the big one goes to the dead-letter file with the reason, `--once`
/// exits 1 and says so, and a replay once the limit is raised delivers it.
#[test]
fn an_event_daphne_refuses_goes_to_the_dead_letter_file_and_nothing_waits() {
    let s = Setup::new(3000);
    let big = 1500;
    let text: String = (0..3000)
        .map(|id| {
            if id == big {
                big_line(id, 1_500_000)
            } else {
                common::agent_process::access_line(id)
            }
        })
        .collect();
    fs::write(&s.log, text).unwrap();
    let mut backend = AsgiBackend::start(s.dir.path(), &Server::daphne(&[]), &[]);
    let config = ws_config(&backend.url(), "max_line_bytes = 2097152");
    let mut agent = s.agent(&config, &["--once"]);
    let code = finish(&mut agent, Duration::from_secs(60), &s, &backend);
    let stderr = s.stderr();
    assert_eq!(
        code,
        Some(1),
        "--once says it did not deliver all: {stderr}"
    );
    assert!(
        stderr.contains("1 events the backend refused were written to")
            && stderr.contains("replay-dead-letters"),
        "{stderr}"
    );
    assert!(!stderr.contains("ERROR"), "no ERROR line: {stderr}");
    assert_exactly_once(&backend.events(), (0..3000).filter(|&i| i != big), "daphne");
    let letters = s.state().join("dead-letters.jsonl");
    let records = common::read_jsonl(&letters);
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["event"]["endpoint"], format!("/item/{big}"));
    assert!(
        record["reason"].as_str().unwrap().contains("reset")
            || record["reason"].as_str().unwrap().contains("closed"),
        "{record}"
    );
    assert!(
        !fs::read_to_string(&letters).unwrap().contains(super::TOKEN),
        "no token in the dead-letter file"
    );
    let first_id = record["event"]["event_id"].as_str().unwrap().to_owned();

    // The operator raises the backend's limit and replays.
    backend.stop();
    backend.run(&Server::daphne(&[
        "--websocket-max-message-size",
        "4000000",
        "--websocket-max-frame-size",
        "4000000",
    ]));
    let cfg = s.dir.path().join("agent.toml");
    let replay = Command::new(common::agent_bin())
        .args(["replay-dead-letters", "--config"])
        .arg(&cfg)
        .output()
        .expect("run replay-dead-letters");
    let out = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(out.contains("1 of 1 dead letters delivered"), "{out}");
    let stored: Vec<Value> = backend
        .events()
        .into_iter()
        .filter(|e| e["endpoint"] == format!("/item/{big}"))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["event_id"], first_id.as_str(), "the same event");
    assert_eq!(stored[0]["api_key"], super::TOKEN, "the token in force");
    assert!(!letters.exists(), "nothing left to replay");
    let again = Command::new(common::agent_bin())
        .args(["replay-dead-letters", "--config"])
        .arg(&cfg)
        .output()
        .expect("run replay-dead-letters");
    assert!(String::from_utf8_lossy(&again.stdout).contains("no dead letters"));
}

/// (3) In the `single` exchange, a consumer that silently drops every
/// 100th message: every event is stored at least once, each repeat with
/// its first `event_id`, and the agent credits none it had no reply for.
#[test]
fn single_never_credits_an_event_whose_reply_did_not_come() {
    let s = Setup::new(1000);
    let backend = AsgiBackend::start(
        s.dir.path(),
        &Server::uvicorn("websockets", &[]),
        &[
            ("CERBERUS_PEER_WIRE", "single"),
            ("CERBERUS_PEER_SKIP_EVERY", "100"),
        ],
    );
    let config = ws_config(&backend.url(), "wire = \"single\"\nack_timeout_ms = 1000");
    let mut agent = s.agent(&config, &["--once"]);
    let code = finish(&mut agent, Duration::from_secs(120), &s, &backend);
    assert_eq!(code, Some(0), "{}", s.stderr());
    let lines = by_line(&backend.events());
    let missing: Vec<usize> = (0..1000).filter(|i| !lines.contains_key(i)).collect();
    assert!(missing.is_empty(), "never stored: {missing:?}");
    for (id, (_, event_ids)) in &lines {
        assert_eq!(event_ids.len(), 1, "line {id} changed its event_id");
    }
    assert!(
        s.stderr().contains("no acknowledgement"),
        "the silence is said: {}",
        s.stderr()
    );
}

/// Three backend restarts while the agent follows a growing log: every line
/// arrives, and the agent's output holds no ERROR line (a library's
/// complaint about each disconnect stays out; the agent says it at WARN).
#[test]
fn backend_restarts_leave_no_error_line() {
    let s = Setup::new(0);
    let server = Server::hypercorn();
    let mut backend = AsgiBackend::start(s.dir.path(), &server, &[]);
    let mut agent = s.agent(&ws_config(&backend.url(), ""), &["--from-beginning"]);
    let mut written = 0;
    for round in 0..4 {
        let mut text = String::new();
        for id in written..written + 200 {
            text.push_str(&common::agent_process::access_line(id));
        }
        written += 200;
        fs::OpenOptions::new()
            .append(true)
            .open(&s.log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .unwrap();
        wait_until(
            Duration::from_secs(60),
            || by_line(&backend.events()).len() >= written,
            || {
                format!(
                    "round {round}: {} of {written} stored; {}",
                    by_line(&backend.events()).len(),
                    s.stderr()
                )
            },
        );
        if round < 3 {
            backend.stop();
            backend.run(&server);
        }
    }
    super::sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(30)), Some(0));
    let stderr = s.stderr();
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert!(
        stderr.contains("WARN"),
        "the disconnects are said: {stderr}"
    );
    let lines = by_line(&backend.events());
    assert!((0..written).all(|i| lines.contains_key(&i)));
}

/// Waits for the agent's exit; on a timeout, fails with both sides' logs.
fn finish(
    agent: &mut super::Agent,
    limit: Duration,
    s: &Setup,
    backend: &AsgiBackend,
) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = agent.try_wait().expect("wait for the agent") {
            return status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not finish within {limit:?}\nagent: {}\nserver: {}",
            s.stderr(),
            backend.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(50));
    }
}
