//! Runs the agent binary in follow mode and collects its events.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct RunningAgent {
    pub child: Child,
    events: Receiver<Value>,
    pub seen: Vec<Value>,
}

impl RunningAgent {
    /// Starts `cerberus-agent ARGS --stdout --state-dir STATE` and waits
    /// until it says it is ready (its first look at the files is done: a
    /// line written from now on is read); its stderr goes to
    /// STATE/agent.stderr (appended), to read when a test fails.
    pub fn start(state: &Path, args: &[&str]) -> Self {
        let stderr_path = state.join("agent.stderr");
        let said_ready = || {
            std::fs::read_to_string(&stderr_path)
                .unwrap_or_default()
                .matches(READY)
                .count()
        };
        let ready_before = said_ready();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.join("agent.stderr"))
            .expect("stderr file");
        let mut child = Command::new(super::agent_bin())
            .args(args)
            .args([
                "--stdout",
                "--state-dir",
                state.to_str().expect("utf-8 path"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start cerberus-agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A killed agent may leave half a line: the events stop
                // there (a live agent's bad line shows as missing events).
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("not an event (the agent was killed mid-line?): {line}");
                    break;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut agent = RunningAgent {
            child,
            events: rx,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while said_ready() == ready_before {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!(
                    "the agent exited ({status}) before it was ready:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the agent never said it was ready:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        agent
    }

    /// Waits until `n` events in all have come out; panics after `limit`.
    pub fn wait_for(&mut self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(_) => panic!(
                    "only {} of {n} events came out within {limit:?}",
                    self.seen.len()
                ),
            }
        }
    }

    /// Collects whatever else comes out within `quiet`.
    pub fn drain(&mut self, quiet: Duration) {
        while let Ok(v) = self.events.recv_timeout(quiet) {
            self.seen.push(v);
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// What the agent says once its first look at the files is done.
pub const READY: &str = "INFO ready: following";

/// Sends SIGTERM to `pid`.
pub fn send_sigterm(pid: u32) {
    send_signal(pid, 15);
}

/// Sends signal `sig` (15: SIGTERM, 1: SIGHUP) to `pid`.
pub fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid the test started; no memory is involved.
    let rc = unsafe { libc_kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// An nginx combined line whose path carries `id`.
pub fn access_line(id: usize) -> String {
    format!(
        "10.0.{}.{} - - [25/Nov/2026:10:04:05 +0000] \"GET /item/{id} HTTP/1.1\" 200 5 \"-\" \"test\"\n",
        id / 250 % 250,
        id % 250 + 1
    )
}

/// The id an event came from.
pub fn id_of(event: &Value) -> usize {
    event["endpoint"]
        .as_str()
        .and_then(|e| e.strip_prefix("/item/"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected event {event}"))
}

/// Whether the tests run as root (servers then switch to their own user).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
