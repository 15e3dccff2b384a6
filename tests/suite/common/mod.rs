//! Helpers shared by the integration tests.

pub mod agent_process;
pub mod backend;
pub mod programs;
pub mod tail_harness;

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/vectors/NAME`: test vectors produced by the real Python
/// packages (copied from the contract's `shared/vectors/`), which prove
/// parity with the middleware.
pub fn vector_file(name: &str) -> PathBuf {
    let path = repo().join("tests").join("vectors").join(name);
    assert!(
        path.is_file(),
        "test vectors {} are missing",
        path.display()
    );
    path
}

/// Reads a JSON-lines file.
pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// The built binary.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cerberus-agent"))
}

/// A port number on 127.0.0.1 that was free a moment ago, for a program
/// that must be told its port before it listens (nginx, Apache, gunicorn
/// and the servers' configs; a backend started only after the agent tries
/// it). Where the test itself listens, it binds port 0 and keeps the
/// socket instead (see `backend::Backend::start(0, …)`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Polls `done` every 50 ms until it holds; after `patience`, fails with
/// `what` and what `context` tells (an agent's log, say).
pub fn wait_until(
    what: &str,
    patience: std::time::Duration,
    context: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < patience,
            "{what}: not in time\n{}",
            context()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
