//! Delivery to a real WebSocket backend started by each test on 127.0.0.1:
//! both exchanges, a backend that closes, acknowledges late, refuses,
//! is down at start or restarts mid-stream, never acknowledges; wss with a
//! CA made at test time; the secret-key fetch.

#[path = "delivery/asgi.rs"]
mod asgi;
use crate::common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agent_process::access_line;
use common::backend::{Backend, Behaviour, Seen, test_pki};
use common::programs::python_backend;

const PATIENCE: Duration = Duration::from_secs(60);
const TOKEN: &str = "tok-SECRET-0451";

struct Setup {
    dir: tempfile::TempDir,
    log: PathBuf,
    /// Start offset of every line written.
    starts: Vec<u64>,
}

impl Setup {
    fn new(lines: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let mut text = String::new();
        let mut starts = Vec::with_capacity(lines);
        for id in 0..lines {
            starts.push(text.len() as u64);
            text.push_str(&access_line(id));
        }
        fs::write(&log, text).unwrap();
        Setup { dir, log, starts }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("agent.stderr")
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// Starts the agent with `config` (TOML) and `args`.
    fn agent(&self, config: &str, args: &[&str]) -> Agent {
        self.agent_with_env(config, args, &[])
    }

    /// As [`Setup::agent`], with environment variables.
    fn agent_with_env(&self, config: &str, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let cfg = self.dir.path().join("agent.toml");
        let config = format!(
            "token = \"{TOKEN}\"\nclient_id = \"shop\"\nformat = \"nginx_combined\"\npattern_dirs = []\nstate_dir = \"{}\"\n{config}",
            self.state().display()
        );
        fs::write(&cfg, config).unwrap();
        Command::new(common::agent_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--log")
            .arg(&self.log)
            .args(args)
            .env_remove("CERBERUS_DEBUG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.stderr_path()).unwrap())
            .spawn()
            .map(Agent)
            .expect("start the agent")
    }

    fn checkpoint(&self) -> Option<u64> {
        let text = fs::read_to_string(self.state().join("checkpoints.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["files"]
            .as_array()?
            .iter()
            .filter_map(|f| f["offset"].as_u64())
            .max()
    }
}

/// The agent process; killed if a test ends (or fails) with it running.
struct Agent(Child);

impl std::ops::Deref for Agent {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    common::agent_process::send_sigterm(child.id());
}

fn ws_config(url: &str, extra: &str) -> String {
    format!("ws_url = \"{url}\"\nsecret_key = \"k\"\n{extra}\n")
}

/// Every line's event arrived, `exactly` once or at least once.
fn assert_all_delivered(s: &Setup, seen: &Seen, exactly: bool) {
    let counts = seen.counts();
    let source = seen.events.lock().unwrap()[0]["event_id"].as_str().unwrap()[..16].to_owned();
    for start in &s.starts {
        let id = format!("{source}{start:016x}");
        let n = counts.get(&id).copied().unwrap_or(0);
        assert!(n >= 1, "the line at offset {start} never arrived");
        if exactly {
            assert_eq!(n, 1, "the line at offset {start} arrived {n} times");
        }
    }
    assert_eq!(counts.len(), s.starts.len(), "no event that was not a line");
}

#[test]
fn batch_mode_delivers_every_line_once_with_the_handshake_headers() {
    let s = Setup::new(3000);
    let backend = Backend::start(0, Seen::new(Behaviour::default()), None);
    let mut agent = s.agent(&ws_config(&backend.url("ws"), ""), &["--once"]);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, true);
    let h = backend.seen.handshakes.lock().unwrap()[0].clone();
    assert_eq!(
        h.get("authorization").map(String::as_str),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(h.get("x-api-key").map(String::as_str), Some(TOKEN));
    assert_eq!(h.get("x-client-id").map(String::as_str), Some("shop"));
    assert!(h["user-agent"].starts_with("cerberus-agent/"), "{h:?}");
    let e = &backend.seen.events.lock().unwrap()[0];
    assert_eq!(
        (
            e["api_key"].as_str(),
            e["token"].as_str(),
            e["client_id"].as_str()
        ),
        (Some(TOKEN), Some(TOKEN), Some("shop"))
    );
    assert_eq!(
        s.checkpoint(),
        Some(fs::metadata(&s.log).unwrap().len()),
        "checkpoint at the end: all acknowledged"
    );
    let stderr = s.stderr();
    assert!(
        !stderr.contains(TOKEN),
        "the token never reaches a log line: {stderr}"
    );
    assert!(
        stderr.contains("unencrypted ws://"),
        "warns about ws://: {stderr}"
    );
    assert!(
        backend
            .seen
            .messages
            .load(std::sync::atomic::Ordering::SeqCst)
            < 3000,
        "events travel in batches"
    );
}

#[test]
fn single_mode_sends_one_event_per_message_and_takes_any_reply_as_ack() {
    let s = Setup::new(300);
    let backend = Backend::start(
        0,
        Seen::new(Behaviour {
            single: true,
            ..Behaviour::default()
        }),
        None,
    );
    let mut agent = s.agent(
        &ws_config(&backend.url("ws"), "wire = \"single\""),
        &["--once"],
    );
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, true);
    assert_eq!(
        backend
            .seen
            .messages
            .load(std::sync::atomic::Ordering::SeqCst),
        300
    );
}

#[test]
fn a_backend_closing_mid_batch_gets_the_batch_again() {
    let s = Setup::new(3000);
    let backend = Backend::start(
        0,
        Seen::new(Behaviour {
            close_at_message: Some(2),
            ..Behaviour::default()
        }),
        None,
    );
    let config = ws_config(&backend.url("ws"), "batch_max_events = 200");
    let mut agent = s.agent(&config, &["--once"]);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, false);
    assert!(
        backend
            .seen
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
    assert!(
        s.stderr().contains("connection to ws://"),
        "says it lost the connection: {}",
        s.stderr()
    );
}

#[test]
fn acknowledgements_later_than_the_timeout_mean_resend() {
    let s = Setup::new(500);
    let backend = Backend::start(
        0,
        Seen::new(Behaviour {
            first_ack_delay: Some(Duration::from_millis(1500)),
            ..Behaviour::default()
        }),
        None,
    );
    let config = ws_config(
        &backend.url("ws"),
        "ack_timeout_ms = 300\nbatch_max_events = 100",
    );
    let mut agent = s.agent(&config, &["--once"]);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, false);
    assert!(s.stderr().contains("no acknowledgement"), "{}", s.stderr());
}

#[test]
fn error_replies_are_logged_and_the_batch_sent_again() {
    let s = Setup::new(400);
    let backend = Backend::start(
        0,
        Seen::new(Behaviour {
            refuse_first: 2,
            ..Behaviour::default()
        }),
        None,
    );
    let mut agent = s.agent(
        &ws_config(&backend.url("ws"), "batch_max_events = 100"),
        &["--once"],
    );
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, false);
    assert!(
        s.stderr().contains("refused batch") && s.stderr().contains("storage full"),
        "{}",
        s.stderr()
    );
    assert!(
        !s.stderr().lines().any(|l| l.starts_with(" ERROR forged")),
        "a line break from the backend wrote a line of its own: {}",
        s.stderr()
    );
}

#[test]
fn a_backend_down_at_start_gets_everything_when_it_comes_up() {
    let s = Setup::new(1000);
    let port = common::free_port();
    let mut agent = s.agent(
        &ws_config(&format!("ws://127.0.0.1:{port}/ingest"), ""),
        &["--once"],
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent waits for the backend"
    );
    assert_eq!(
        s.checkpoint().unwrap_or(0),
        0,
        "nothing acknowledged, nothing checkpointed"
    );
    let backend = Backend::start(port, Seen::new(Behaviour::default()), None);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, true);
    assert!(s.stderr().contains("cannot connect"), "{}", s.stderr());
}

/// Waiting for a backend (past the 5 s rescan period, in `--once`'s
/// draining phase) sleeps: a spinning loop would burn a core here.
#[test]
fn an_agent_waiting_for_its_backend_does_not_spin() {
    let s = Setup::new(100);
    let port = common::free_port();
    let agent = s.agent(
        &ws_config(&format!("ws://127.0.0.1:{port}/ingest"), ""),
        &["--once"],
    );
    std::thread::sleep(Duration::from_millis(5500));
    let before = cpu_seconds(agent.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(agent.id()) - before;
    assert!(used < 0.5, "the waiting agent used {used} s of CPU in 2 s");
}

#[test]
fn a_backend_restarting_during_100k_lines_loses_nothing_and_checkpoints_only_acks() {
    let s = Setup::new(100_000);
    // A backend slow enough (1 ms per acknowledgement) for the restarts
    // to land while the lines are being sent.
    let seen = Seen::new(Behaviour {
        ack_delay: Some(Duration::from_millis(1)),
        ..Behaviour::default()
    });
    let mut backend = Backend::start(0, seen.clone(), None);
    let port = backend.port;
    let mut agent = s.agent(
        &ws_config(
            &backend.url("ws"),
            "batch_max_events = 100
max_in_flight = 2",
        ),
        &["--once"],
    );
    let mut restarts = 0;
    let mut checked = 0;
    let acked_offsets = || -> Vec<u64> {
        let ids: Vec<String> = seen.acked.lock().unwrap().iter().cloned().collect();
        ids.iter()
            .filter_map(|id| u64::from_str_radix(&id[16..], 16).ok())
            .collect()
    };
    let mut last_check = Instant::now();
    let started = Instant::now();
    while agent.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < PATIENCE, "too slow: {}", s.stderr());
        // The checkpoint is read before the acknowledged set, which only
        // grows: every line below the checkpoint must be in it.
        let check_now = last_check.elapsed() >= Duration::from_millis(100);
        if let Some(c) = s.checkpoint().filter(|_| check_now) {
            last_check = Instant::now();
            let acked = acked_offsets();
            let below = s.starts.partition_point(|&x| x < c);
            let acked_below = acked.iter().filter(|&&o| o < c).count();
            assert_eq!(
                acked_below, below,
                "checkpoint {c} passes a line the backend did not acknowledge"
            );
            checked += 1;
        }
        let received = seen.event_count();
        if (restarts == 0 && received > 10_000) || (restarts == 1 && received > 50_000) {
            backend.stop();
            std::thread::sleep(Duration::from_millis(400));
            backend = Backend::start(port, seen.clone(), None);
            restarts += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(agent.wait().unwrap().code(), Some(0), "{}", s.stderr());
    assert_eq!(
        restarts,
        2,
        "the backend restarted twice while lines were sent ({} events in {:?})",
        seen.event_count(),
        started.elapsed()
    );
    assert!(checked > 0);
    assert_all_delivered(&s, &seen, false);
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_backend_that_never_acknowledges_holds_the_agent_within_its_limits() {
    let s = Setup::new(1_000_000);
    let file_kib = fs::metadata(&s.log).unwrap().len() / 1024;
    let backend = Backend::start(
        0,
        Seen::new(Behaviour {
            silent: true,
            ..Behaviour::default()
        }),
        None,
    );
    let config = ws_config(
        &backend.url("ws"),
        "batch_max_events = 100\nmax_in_flight = 4\nack_timeout_ms = 600000\nshutdown_timeout_ms = 1000",
    );
    let mut agent = s.agent(&config, &["--from-beginning"]);
    // The window fills; then nothing more goes out, however long it waits
    // (a second after the window is full, more would show).
    let started = Instant::now();
    while backend.seen.event_count() < 4 * 100 {
        assert!(
            started.elapsed() < PATIENCE,
            "the window never filled: {} events sent\n{}",
            backend.seen.event_count(),
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let received = backend.seen.event_count();
    assert!(
        received <= 4 * 100,
        "only the window is in flight: {received} events sent"
    );
    let peak = rss_kib(agent.id(), "VmHWM:");
    assert!(
        peak > 0 && peak < file_kib / 3,
        "peak memory {peak} KiB for a {file_kib} KiB file: the file is the buffer"
    );
    sigterm(&agent);
    let began = Instant::now();
    assert_eq!(
        wait_exit(&mut agent, Duration::from_secs(15)),
        Some(0),
        "{}",
        s.stderr()
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "bounded shutdown"
    );
    assert!(
        s.stderr().contains("gave up waiting for acknowledgements"),
        "{}",
        s.stderr()
    );
    assert_eq!(
        s.checkpoint().unwrap_or(0),
        0,
        "nothing acknowledged, nothing checkpointed"
    );
}

/// 40 lines sent as 4 batches, all in flight before the first answer,
/// to a backend that acknowledges them and goes away for good: the sender
/// is then between connections with nothing left to deliver. The agent
/// runs with `extra` settings and `args`.
fn agent_outliving_its_backend(extra: &str, args: &[&str]) -> (Setup, Backend, Agent) {
    let s = Setup::new(40);
    let backend = Backend::start(
        0,
        Seen::new(Behaviour {
            gone_after_message: Some(4),
            // The answers end the connection before the sender asks for
            // more.
            first_ack_delay: Some(Duration::from_millis(300)),
            ..Behaviour::default()
        }),
        None,
    );
    let config = ws_config(
        &backend.url("ws"),
        &format!("batch_max_events = 10\nmax_in_flight = 4\nbatch_linger_ms = 50\n{extra}"),
    );
    let agent = s.agent(&config, args);
    (s, backend, agent)
}

#[test]
fn a_once_run_ends_when_the_backend_goes_away_after_the_last_acknowledgement() {
    let (s, backend, mut agent) = agent_outliving_its_backend("", &["--once", "--from-beginning"]);
    // Before, the sender tried to reconnect for ever before it looked at
    // the queue the agent had closed: the run never ended.
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, true);
    assert_eq!(
        s.checkpoint(),
        Some(fs::metadata(&s.log).unwrap().len()),
        "{}",
        s.stderr()
    );
}

#[test]
fn a_stop_after_the_backend_went_away_with_everything_acknowledged_is_prompt() {
    let (s, backend, mut agent) =
        agent_outliving_its_backend("shutdown_timeout_ms = 600000", &["--from-beginning"]);
    let started = Instant::now();
    while !s.stderr().contains("lost") {
        assert!(
            started.elapsed() < PATIENCE,
            "the connection never ended: {}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(backend.seen.acked.lock().unwrap().len(), 40);
    sigterm(&agent);
    // Nothing is unacknowledged: the stop owes the backend nothing, and
    // must not wait out `shutdown_timeout` (ten minutes here).
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert!(!s.stderr().contains("gave up waiting"), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, true);
}

#[test]
fn wss_with_a_ca_made_now_and_a_clear_failure_without_it() {
    let pki = test_pki();
    let s = Setup::new(200);
    let ca = s.dir.path().join("ca.pem");
    fs::write(&ca, &pki.ca_pem).unwrap();
    let backend = Backend::start(0, Seen::new(Behaviour::default()), Some(pki.server.clone()));

    // Without the CA: the certificate is not trusted; the agent says so and
    // keeps trying.
    let untrusted = s.agent(&ws_config(&backend.url("wss"), ""), &["--once"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.stderr().contains("invalid peer certificate") {
        assert!(
            Instant::now() < deadline,
            "no clear TLS error: {}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.stderr().contains("tls_ca_file"),
        "points at the setting: {}",
        s.stderr()
    );
    assert_eq!(backend.seen.event_count(), 0);
    drop(untrusted);

    let config = ws_config(
        &backend.url("wss"),
        &format!("tls_ca_file = \"{}\"", ca.display()),
    );
    let mut agent = s.agent(&config, &["--once"]);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_all_delivered(&s, &backend.seen, true);
    assert!(!s.stderr().contains("unencrypted"), "{}", s.stderr());
}

/// An HTTP server answering GET /api/secret-key with the given responses in
/// turn (the last one repeats); records the X-API-Key headers it saw. A 3xx
/// response's body is its Location.
struct KeyServer {
    port: u16,
    keys_seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn key_server(responses: Vec<(u16, &'static str)>) -> KeyServer {
    key_server_over(responses, None)
}

/// The same, over TLS with `tls` (HTTPS).
fn key_server_over(
    responses: Vec<(u16, &'static str)>,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> KeyServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let keys_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = keys_seen.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let mut stream: Box<dyn ReadWrite> = match &tls {
                Some(config) => match rustls::ServerConnection::new(config.clone()) {
                    Ok(conn) => Box::new(rustls::StreamOwned::new(conn, stream)),
                    Err(_) => continue,
                },
                None => Box::new(stream),
            };
            let mut buf = vec![0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            if let Some(line) = request
                .lines()
                .find(|l| l.to_lowercase().starts_with("x-api-key:"))
            {
                seen.lock().unwrap().push(line[10..].trim().to_owned());
            }
            let (status, body) = responses[i.min(responses.len() - 1)];
            let path_ok = request.starts_with("GET /api/secret-key ");
            let (status, body) = if path_ok {
                (status, body)
            } else if n > 0 {
                (404, "not found")
            } else {
                continue;
            };
            let location = if (300..400).contains(&status) {
                format!("Location: {body}\r\n")
            } else {
                String::new()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\n{location}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.flush();
        }
    });
    KeyServer { port, keys_seen }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn hmac_hex(key: &str, ip: &str) -> String {
    cerberus_agent::pseudonymise::IpPseudonymiser::new(Some(key)).compute(ip)
}

#[test]
fn the_secret_key_is_fetched_before_any_event() {
    let s = Setup::new(20);
    let backend = Backend::start(0, Seen::new(Behaviour::default()), None);
    // Fails twice, then answers.
    let keys = key_server(vec![
        (500, "{}"),
        (503, "oops"),
        (200, r#"{"secret_key":"from-backend"}"#),
    ]);
    let config = format!(
        "ws_url = \"{}\"\nbackend_url = \"http://127.0.0.1:{}/\"\n",
        backend.url("ws"),
        keys.port
    );
    let mut agent = s.agent(&config, &["--once"]);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_eq!(
        keys.keys_seen.lock().unwrap()[0],
        TOKEN,
        "X-API-Key is the token"
    );
    let events = backend.seen.events.lock().unwrap().clone();
    assert_eq!(events.len(), 20);
    for e in &events {
        let ip = format!("10.0.0.{}", 1 + (id_from(e) % 250));
        assert_eq!(
            e["remote_addr"],
            hmac_hex("from-backend", &ip),
            "hashed with the fetched key"
        );
    }
    let stderr = s.stderr();
    assert!(
        stderr.contains("HTTP 500") && stderr.contains("retrying"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("from-backend") && !stderr.contains(TOKEN),
        "no secret in the log: {stderr}"
    );
}

/// A key endpoint that redirects elsewhere: the token never reaches the
/// other origin, and its key is never used.
#[test]
fn the_key_fetch_follows_no_redirect() {
    let s = Setup::new(5);
    let backend = Backend::start(0, Seen::new(Behaviour::default()), None);
    let evil = key_server(vec![(200, r#"{"secret_key":"chosen-by-evil"}"#)]);
    let location: &'static str =
        Box::leak(format!("http://127.0.0.1:{}/api/secret-key", evil.port).into_boxed_str());
    let keys = key_server(vec![(302, location)]);
    let config = format!(
        "ws_url = \"{}\"\nbackend_url = \"http://127.0.0.1:{}\"\nwait_for_secret_key = false\n",
        backend.url("ws"),
        keys.port
    );
    let mut agent = s.agent(&config, &["--once"]);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    assert_eq!(
        keys.keys_seen.lock().unwrap().len(),
        1,
        "asked its own origin"
    );
    assert!(
        evil.keys_seen.lock().unwrap().is_empty(),
        "the token went to the redirect's target"
    );
    let events = backend.seen.events.lock().unwrap().clone();
    assert_eq!(
        events[0]["remote_addr"], "10.0.0.1",
        "no key from elsewhere"
    );
    assert!(
        s.stderr().contains("redirects are not followed"),
        "{}",
        s.stderr()
    );
}

/// An HTTPS key endpoint with a private CA's certificate: trusted through
/// `tls_ca_file`, as the WebSocket is.
#[test]
fn the_key_fetch_trusts_tls_ca_file() {
    let pki = test_pki();
    let s = Setup::new(5);
    let ca = s.dir.path().join("ca.pem");
    fs::write(&ca, &pki.ca_pem).unwrap();
    let backend = Backend::start(0, Seen::new(Behaviour::default()), None);
    let keys = key_server_over(
        vec![(200, r#"{"secret_key":"private-ca-key"}"#)],
        Some(pki.server.clone()),
    );
    let config = format!(
        "ws_url = \"{}\"\nbackend_url = \"https://127.0.0.1:{}\"\ntls_ca_file = \"{}\"\n",
        backend.url("ws"),
        keys.port,
        ca.display()
    );
    let mut agent = s.agent(&config, &["--once"]);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    let events = backend.seen.events.lock().unwrap().clone();
    assert_eq!(events.len(), 5);
    assert_eq!(
        events[0]["remote_addr"],
        hmac_hex("private-ca-key", "10.0.0.1")
    );
}

/// At the most verbose filter, with the token in the WebSocket URL's query,
/// a handshake the backend refuses and a key fetched over HTTP: nothing of
/// the token in any line (the HTTP and WebSocket libraries print URLs and
/// headers at debug and trace; they are kept out), and a token given as a
/// flag is warned about.
#[test]
fn the_token_never_reaches_the_log_even_at_trace() {
    let s = Setup::new(5);
    let keys = key_server(vec![(200, r#"{"secret_key":"fetched-key"}"#)]);
    let config = format!(
        "ws_url = \"ws://127.0.0.1:{0}/ingest?token={TOKEN}\"\nbackend_url = \"http://127.0.0.1:{0}\"\n",
        keys.port
    );
    let mut agent = s.agent_with_env(
        &config,
        &["--once", "--once-timeout", "3", "--token", TOKEN],
        &[("CERBERUS_LOG_FILTER", "trace")],
    );
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(1), "{}", s.stderr());
    let stderr = s.stderr();
    assert!(
        stderr.contains("refused the WebSocket handshake with HTTP 404"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--token was given on the command line"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "the token in the log: {stderr}");
    assert!(!stderr.contains("fetched-key"), "the key in the log");
    assert!(!stderr.to_lowercase().contains("x-api-key:"), "{stderr}");
}

fn id_from(e: &serde_json::Value) -> usize {
    common::agent_process::id_of(e)
}

#[test]
fn a_garbage_key_answer_falls_back_to_plain_ips_only_when_allowed() {
    let s = Setup::new(10);
    let backend = Backend::start(0, Seen::new(Behaviour::default()), None);
    let keys = key_server(vec![(200, "<html>not json</html>")]);
    let base = format!(
        "ws_url = \"{}\"\nbackend_url = \"http://127.0.0.1:{}\"\n",
        backend.url("ws"),
        keys.port
    );

    // Waiting for the key (the default): no event leaves, however long.
    let mut waiting = s.agent(&base, &["--once"]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(waiting.try_wait().unwrap().is_none());
    assert_eq!(
        backend.seen.event_count(),
        0,
        "no IP is sent before the key decision"
    );
    assert!(s.stderr().contains("not JSON"), "{}", s.stderr());
    sigterm(&waiting);
    assert_eq!(wait_exit(&mut waiting, Duration::from_secs(10)), Some(0));

    // Allowed to fall back: plain IPs, with a warning.
    let mut agent = s.agent(&format!("{base}wait_for_secret_key = false\n"), &["--once"]);
    assert_eq!(wait_exit(&mut agent, PATIENCE), Some(0), "{}", s.stderr());
    let events = backend.seen.events.lock().unwrap().clone();
    assert_eq!(events.len(), 10);
    assert_eq!(events[0]["remote_addr"], "10.0.0.1");
    assert!(s.stderr().contains("plain text"), "{}", s.stderr());
}

/// A backend written with Python's `websockets` (installed by
/// tests/setup.sh), as the real one is: the agent's events arrive exactly
/// once in both exchanges, with permessage-deflate when both sides want
/// it, and as plain messages when the backend refuses the extension or the
/// agent has it turned off.
#[test]
fn a_python_websockets_backend_gets_every_event_compressed_or_not() {
    for wire in ["single", "batch"] {
        for (agent_compression, backend_compresses, agreed) in [
            ("deflate", true, true),
            ("deflate", false, false),
            ("off", true, false),
        ] {
            let case = format!(
                "wire {wire}, agent compression {agent_compression}, backend accepts it: {backend_compresses}"
            );
            let (connections, stderr) =
                deliver_to_python_backend(wire, agent_compression, backend_compresses, &case);
            // Offered first without a window limit, which websockets
            // takes: the agent compresses with its 32 KiB window.
            let expected = if agreed {
                "permessage-deflate client_max_window_bits=15 client_no_context_takeover=False"
            } else {
                "none"
            };
            assert!(
                !connections.is_empty() && connections.iter().all(|c| c == expected),
                "{case}: connections negotiated {connections:?}, expected {expected}"
            );
            let said = match (agent_compression, agreed) {
                ("off", _) => None,
                (_, true) => Some("(compressed: permessage-deflate)"),
                (_, false) => Some("the backend declined permessage-deflate"),
            };
            if let Some(said) = said {
                assert!(stderr.contains(said), "{case}: {stderr}");
            }
        }
    }
}

/// A Python backend that takes compression only on its own terms (a small
/// window for what the agent sends, declining an offer that would not let
/// it name one, and no context takeover): the agent's second offer is
/// taken, and the backend's zlib inflates every message with that window
/// and a fresh state, so each event arrives only if the agent compressed
/// as agreed.
#[test]
fn the_agent_compresses_on_the_terms_a_python_backend_sets() {
    for (wire, bits, no_takeover) in [
        ("batch", "9", true),
        ("batch", "11", false),
        ("single", "10", true),
    ] {
        let case =
            format!("wire {wire}, client window 2^{bits}, no context takeover: {no_takeover}");
        let mut terms = vec!["--client-window-bits", bits];
        if no_takeover {
            terms.push("--client-no-context-takeover");
        }
        let (connections, stderr) = deliver_to_python_backend_with(
            wire,
            "deflate",
            &terms,
            // Several messages, so that a window carried over would show.
            "batch_max_events = 40",
            &case,
        );
        let expected = format!(
            "permessage-deflate client_max_window_bits={bits} client_no_context_takeover={}",
            if no_takeover { "True" } else { "False" }
        );
        assert!(
            !connections.is_empty() && connections.iter().all(|c| *c == expected),
            "{case}: {connections:?}\n{stderr}"
        );
    }
}

/// A busy site's log, varied as real ones are (clients repeating on a
/// heavy tail, v4 and v6; user agents with quotes, backslashes and
/// non-ASCII bytes, as nginx escapes them; long and short paths), sent
/// with the agent's own compressor to a Python backend whose zlib inflates
/// with the window it asked for: every event arrives exactly as the
/// `--stdout` path writes it: with the agent's 32 KiB window (what a
/// default `websockets` backend agrees to), and with a 4 KiB and a
/// 512-byte one that a backend insists on.
#[test]
fn a_busy_sites_events_arrive_from_the_agents_compressor_exactly_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "curl/8.5.0",
        "say \\x22hi\\x22 \\x5Cback\\x5C caf\\xC3\\xA9",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut text = String::new();
    for i in 0..6000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // A heavy tail: most requests from a few clients.
        let client = (x % 1000) * (x % 1000) / 1000;
        let ip = if client.is_multiple_of(7) {
            format!("2001:db8::{client:x}")
        } else {
            format!("198.51.{}.{}", client / 200, client % 200 + 1)
        };
        let path = match x % 5 {
            0 => format!("/api/v1/products/{}?include=stock", x % 99_999),
            1 => format!("/search?q=caf%C3%A9+{}&lang=de", i),
            2 => "/health".to_owned(),
            3 => format!("/static/{}", "a".repeat((x % 700) as usize)),
            _ => format!("/blog/{}/\\x22quoted\\x22", x % 50),
        };
        text.push_str(&format!(
            "{ip} - - [25/Nov/2026:10:{:02}:{:02} +0000] \"GET {path} HTTP/1.1\" {} {} \"-\" \"{}\"\n",
            i / 600 % 60,
            i / 10 % 60,
            [200, 404, 301][(x >> 8) as usize % 3],
            x % 60_000,
            agents[(x >> 16) as usize % agents.len()],
        ));
    }
    fs::write(&log, text).unwrap();

    let run = |extra: &[&str], state: &str| {
        Command::new(common::agent_bin())
            .arg("--log")
            .arg(&log)
            .args(["--once", "--format", "nginx_combined", "--secret-key", "k"])
            .args(["--token", TOKEN])
            .arg("--state-dir")
            .arg(dir.path().join(state))
            .args(["--pattern-dir", "/nonexistent"])
            .args(extra)
            .env_remove("CERBERUS_DEBUG")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run the agent")
    };
    let as_values = |text: &str| -> Vec<serde_json::Value> {
        let mut v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("an event"))
            .collect();
        v.sort_by_key(|e| e["event_id"].as_str().unwrap_or_default().to_owned());
        v
    };
    let printed = run(&["--stdout"], "stdout-state");
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let expected = as_values(&String::from_utf8_lossy(&printed.stdout));
    assert_eq!(expected.len(), 6000);

    for (terms, name) in [
        (&[][..], "default"),
        (&["--client-window-bits", "12"][..], "w12"),
        (&["--client-window-bits", "9"][..], "w9"),
    ] {
        let received = dir.path().join(format!("received-{name}.jsonl"));
        let port = common::free_port();
        let mut args = vec!["--wire", "batch"];
        args.extend_from_slice(terms);
        let mut peer = python_backend(port, &received, &args);
        let url = format!("ws://127.0.0.1:{port}/");
        let sent = run(&["--ws-url", &url], &format!("state-{name}"));
        let _ = peer.kill();
        let _ = peer.wait();
        let stderr = String::from_utf8_lossy(&sent.stderr);
        assert!(sent.status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains("(compressed: permessage-deflate)"),
            "{name}: {stderr}"
        );
        let got = as_values(&fs::read_to_string(&received).unwrap_or_default());
        assert_eq!(got.len(), expected.len(), "{name}: events received");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "{name}: an event changed on the way");
        }
    }
}

/// A backend whose first message is a deflate bomb (200 MiB of zeros, about
/// 200 KiB compressed): the agent refuses it after 1 MiB, drops that
/// connection only, and delivers everything on the next, with its memory
/// bounded.
#[test]
fn a_deflate_bomb_from_the_backend_costs_one_connection() {
    let s = Setup::new(250);
    let port = common::free_port();
    let received = s.dir.path().join("received.jsonl");
    let mut peer = python_backend(port, &received, &["--wire", "batch", "--bomb-first"]);
    let mut agent = s.agent(
        &ws_config(&format!("ws://127.0.0.1:{port}/"), ""),
        &["--from-beginning"],
    );
    let deadline = Instant::now() + PATIENCE;
    let stored = || fs::read_to_string(&received).map_or(0, |t| t.lines().count());
    while stored() < 250 {
        assert!(Instant::now() < deadline, "not delivered: {}", s.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak_kib = rss_kib(agent.id(), "VmHWM:");
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), Some(0));
    let _ = peer.kill();
    let _ = peer.wait();
    let stderr = s.stderr();
    assert!(stderr.contains("inflates past 1048576 bytes"), "{stderr}");
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB: {stderr}");
}

/// Runs the agent with `--once` against the Python backend; checks that
/// every one of 250 events arrived exactly once and returns what each
/// connection negotiated, and the agent's messages.
fn deliver_to_python_backend(
    wire: &str,
    compression: &str,
    backend_compresses: bool,
    case: &str,
) -> (Vec<String>, String) {
    let refuse: &[&str] = match backend_compresses {
        true => &[],
        false => &["--no-compression"],
    };
    deliver_to_python_backend_with(wire, compression, refuse, "", case)
}

/// As [`deliver_to_python_backend`], with the backend's `terms` (its
/// flags) and more of the agent's `settings`.
fn deliver_to_python_backend_with(
    wire: &str,
    compression: &str,
    terms: &[&str],
    settings: &str,
    case: &str,
) -> (Vec<String>, String) {
    let s = Setup::new(250);
    let port = common::free_port();
    let received = s.dir.path().join("received.jsonl");
    let mut args = vec!["--wire", wire];
    args.extend_from_slice(terms);
    let mut peer = python_backend(port, &received, &args);
    let mut agent = s.agent(
        &ws_config(
            &format!("ws://127.0.0.1:{port}/"),
            &format!("wire = \"{wire}\"\ncompression = \"{compression}\"\n{settings}"),
        ),
        &["--once"],
    );
    let code = wait_exit(&mut agent, PATIENCE);
    let _ = peer.kill();
    let _ = peer.wait();
    let stderr = s.stderr();
    assert_eq!(code, Some(0), "{case}: {stderr}");
    drop(agent);
    let lines: Vec<serde_json::Value> = fs::read_to_string(&received)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for e in &lines {
        *ids.entry(e["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
        assert!(
            e["remote_addr"].as_str().is_some()
                && e["endpoint"].as_str().unwrap().starts_with("/item/")
        );
    }
    assert_eq!(ids.len(), 250, "{case}");
    assert!(
        ids.values().all(|&n| n == 1),
        "{case}: an event arrived twice"
    );
    let connections = fs::read_to_string(received.with_extension("jsonl.connections"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    (connections, stderr)
}
