//! Running programs from a test: the agent once, to its end; a system
//! program from its Debian package; nginx in the foreground; waiting for a
//! port; the Python backend (tests/peers/middleware_backend.py).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `cerberus-agent ARGS` to its end, with `env` set (and debug
/// logging off, whatever the test's environment says).
pub fn run_agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(super::agent_bin());
    cmd.args(args)
        .env_remove("CERBERUS_DEBUG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cerberus-agent")
}

/// The events an agent printed: its JSON lines.
pub fn printed_events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The first of `candidates` that exists; a loud failure naming the
/// package when none does (tests/setup.sh installs it).
pub fn installed(candidates: &[&str], package: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{package} is not installed: tests/setup.sh installs it"))
}

/// Waits (bounded) until something listens on 127.0.0.1:`port`; the
/// failure shows `log`, where the program says why it does not.
pub fn wait_for_port(port: u16, what: &str, log: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on 127.0.0.1:{port}: {}",
            log.and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real nginx (Debian's package), in the foreground with a prefix and
/// config of the test's own; stopped when dropped.
pub struct Nginx(Child);

impl Nginx {
    /// Starts nginx on `conf` (prefix `work`, error log `work/nginx-error.log`)
    /// and waits until each of `ports` listens.
    pub fn start(work: &Path, conf: &Path, ports: &[(u16, &str)]) -> Self {
        let nginx = installed(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx");
        let error_log = work.join("nginx-error.log");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(work)
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx(child);
        for (port, what) in ports {
            wait_for_port(*port, what, Some(&error_log));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would leave
        // them running).
        super::agent_process::send_sigterm(self.0.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the real logrotate (Debian's package) now (`-f`) on `conf`, with its
/// state file `state`; fails loudly when it fails.
pub fn logrotate(state: &Path, conf: &Path) {
    let binary = installed(
        &[
            "/usr/sbin/logrotate",
            "/sbin/logrotate",
            "/usr/bin/logrotate",
        ],
        "logrotate",
    );
    let out = Command::new(binary)
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(conf)
        .output()
        .expect("run logrotate");
    assert!(
        out.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts tests/peers/middleware_backend.py on `port` with `args`; returns
/// once it listens.
pub fn python_backend(port: u16, received: &std::path::Path, args: &[&str]) -> Child {
    let python = super::repo().join("target/test-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: tests/setup.sh installs it",
        python.display()
    );
    let mut peer = Command::new(&python)
        .arg(super::repo().join("tests/peers/middleware_backend.py"))
        .arg(port.to_string())
        .arg(received)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Python backend");
    let mut ready = String::new();
    let mut out = peer.stdout.take().expect("the backend's stdout");
    let mut byte = [0u8; 1];
    while !ready.ends_with('\n') {
        assert_eq!(
            std::io::Read::read(&mut out, &mut byte).expect("read the backend's stdout"),
            1,
            "the Python backend did not start"
        );
        ready.push(byte[0] as char);
    }
    assert!(ready.starts_with("listening"), "{ready}");
    peer
}
