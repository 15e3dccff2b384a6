//! The whole system under load with every fault at once: "loses no data"
//! as a figure measured end to end.
//!
//! On 127.0.0.1 only, the test starts the real nginx (Debian's package,
//! installed by `tests/setup.sh`; its own prefix and config, never the
//! system's) proxying to a second nginx server that sets the
//! `X-Cerberus-Metrics` header, writing the `cerberus_json` log; a load
//! generator sending numbered requests at a steady rate from several 127.x
//! source addresses; the real `logrotate` rotating the log every few
//! seconds, alternating `create` (nginx reopens on SIGUSR1) and
//! `copytruncate`, with `compress` and `delaycompress`; a WebSocket backend
//! that records every event and acknowledges batches; and the agent, run as
//! `nobody` when the test runs as root (so that a read-only state folder is
//! read-only to it).
//!
//! During the run, at moments drawn from a seed printed in the output
//! (`SYSTEM_TEST_SEED=N` replays a run; `SYSTEM_TEST_SECONDS`
//! sets the load's length): `kill -9` of the agent and a restart, once with
//! the checkpoint file cut in half while it is stopped, once after two
//! rotations while it is down (the file it was reading compressed, another
//! written and rotated meanwhile, as when systemd gives up restarting it
//! for a while); the backend killed
//! and restarted; the backend holding acknowledgements for seconds; the
//! backend closing a connection mid-batch; garbage, invalid UTF-8 and a
//! 1 MiB line appended to the live log; the state folder made read-only
//! for a while.
//!
//! At the end every request whose line is on disk (current, rotated and
//! compressed files) must have reached the backend, every line with one
//! `event_id` whichever file it was read from, and the agent must exit 0 on
//! SIGTERM. Lines logrotate's `copytruncate` itself dropped (written
//! between its copy and its truncate) are on no disk; they are counted
//! apart. The last line printed sums it all up.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::agent_process::send_sigterm;
use common::backend::{Backend, Behaviour, Seen};
use common::programs::{Nginx, installed};
use serde_json::Value;

/// Requests per second the load generator sends.
const RATE: u64 = 250;
/// The agent's peak resident memory must stay below this.
const RSS_BOUND_KIB: u64 = 48 * 1024;
/// How long the agent may take to exit on SIGTERM (its shutdown timeout
/// plus start-up slack).
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// A small deterministic generator (xorshift), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() % 1_000_000) as f64 / 1_000_000.0 * (hi - lo)
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The nginx `cerberus_json` format README.md gives operators.
const CERBERUS_JSON: &str = r#"'{"remote_addr":"$remote_addr","time_iso8601":"$time_iso8601","request_method":"$request_method","request_uri":"$request_uri","uri":"$uri","args":"$args","scheme":"$scheme","server_protocol":"$server_protocol","status":"$status","body_bytes_sent":"$body_bytes_sent","request_time":"$request_time","http_referer":"$http_referer","http_user_agent":"$http_user_agent","upstream_http_x_cerberus_metrics":"$upstream_http_x_cerberus_metrics"}'"#;

/// The real nginx in front of its own app server, logging cerberus_json
/// into `logs`; stopped when dropped.
fn start_nginx(work: &Path, logs: &Path, front: u16, app: u16) -> Nginx {
    {
        let tmp = work.join("nginx-tmp");
        fs::create_dir_all(&tmp).unwrap();
        let conf = work.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 512; }}
http {{
  log_format cerberus_json escape=json {CERBERUS_JSON};
  access_log {logs}/access.log cerberus_json;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  server {{
    listen 127.0.0.1:{app};
    access_log off;
    location / {{
      add_header X-Cerberus-Metrics '{{\"id\":\"$arg_id\",\"node\":\"app\"}}' always;
      return 200 \"ok\\n\";
    }}
  }}
  server {{
    listen 127.0.0.1:{front};
    location / {{ proxy_pass http://127.0.0.1:{app}; }}
  }}
}}
",
                work = work.display(),
                logs = logs.display(),
                tmp = tmp.display(),
            ),
        )
        .unwrap();
        Nginx::start(
            work,
            &conf,
            &[(front, "nginx"), (app, "nginx's app server")],
        )
    }
}

/// What the load generator did.
#[derive(Default)]
struct Load {
    sent: AtomicUsize,
    /// Ids nginx answered with 200.
    answered: Mutex<BTreeSet<u64>>,
}

/// Sends `total` numbered requests at [`RATE`] per second, from 127.0.0.2
/// to 127.0.0.5, over fresh connections.
fn generate_load(front: u16, total: u64, load: Arc<Load>) -> Vec<std::thread::JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    (0..4u8)
        .map(|k| {
            let (next, load) = (next.clone(), load.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    loop {
                        let id = next.fetch_add(1, Ordering::SeqCst);
                        if id >= total {
                            break;
                        }
                        let due = start + Duration::from_micros(id * 1_000_000 / RATE);
                        tokio::time::sleep_until(due.into()).await;
                        load.sent.fetch_add(1, Ordering::SeqCst);
                        if request(front, k, id).await {
                            load.answered.lock().unwrap().insert(id);
                        }
                    }
                });
            })
        })
        .collect()
}

async fn request(front: u16, k: u8, id: u64) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 2 + k], 0)))?;
        let mut tcp = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], front)))
            .await?;
        let req = format!(
            "GET /item/{id}?id={id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: load/{k}\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await?;
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await?;
        Ok::<bool, std::io::Error>(reply.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false)
}

/// The agent, started again and again on the same configuration.
struct AgentRunner {
    config: PathBuf,
    stderr: PathBuf,
    as_nobody: bool,
    /// The running agent's pid (0: none), for the memory sampler.
    pid: Arc<AtomicU32>,
}

impl AgentRunner {
    fn start(&self) -> Child {
        let agent = common::agent_bin();
        let mut cmd = if self.as_nobody {
            let mut c = Command::new(installed(&["/usr/bin/setpriv", "/bin/setpriv"], "setpriv"));
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&agent);
            c
        } else {
            Command::new(&agent)
        };
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .env_remove("CERBERUS_DEBUG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the agent");
        self.pid.store(child.id(), Ordering::SeqCst);
        child
    }
}

/// Samples the running agent's peak resident memory (VmHWM) until `stop`.
fn sample_memory(pid: Arc<AtomicU32>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::SeqCst) {
            let p = pid.load(Ordering::SeqCst);
            if p != 0
                && let Ok(status) = fs::read_to_string(format!("/proc/{p}/status"))
                && let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    })
}

/// Rotates the log with the real logrotate every few seconds until `stop`,
/// alternating `create` and `copytruncate`; returns how many of each.
fn rotate(
    work: PathBuf,
    logs: PathBuf,
    seed: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let mut rng = Rng(seed ^ 0x5eed);
        let (mut created, mut copied) = (0, 0);
        let state = work.join("logrotate.status");
        let pidfile = work.join("nginx.pid");
        let mut k = 0;
        loop {
            let pause = Duration::from_secs_f64(rng.between(2.0, 4.0));
            let deadline = Instant::now() + pause;
            while Instant::now() < deadline {
                if stop.load(Ordering::SeqCst) {
                    return (created, copied);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let how = if k % 2 == 0 {
                created += 1;
                format!(
                    "  create\n  postrotate\n    kill -USR1 $(cat {})\n  endscript\n",
                    pidfile.display()
                )
            } else {
                copied += 1;
                "  copytruncate\n".to_owned()
            };
            k += 1;
            let conf = work.join("logrotate.conf");
            fs::write(
                &conf,
                format!(
                    "{}/access.log {{\n  rotate 1000\n  missingok\n  compress\n  delaycompress\n{how}}}\n",
                    logs.display()
                ),
            )
            .unwrap();
            common::programs::logrotate(&state, &conf);
            done.fetch_add(1, Ordering::SeqCst);
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    AgentKill,
    AgentKillCheckpointCut,
    AgentDownTwoRotations,
    BackendRestart,
    AckHold,
    CloseMidBatch,
    Garbage,
    InvalidUtf8,
    HugeLine,
    StateReadOnly,
}

/// The request ids in every log file under `logs` (compressed ones too),
/// with how many files the lines were found in.
fn ids_on_disk(logs: &Path) -> (BTreeSet<u64>, usize) {
    let mut ids = BTreeSet::new();
    let mut files = 0;
    for entry in fs::read_dir(logs).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("access.log") {
            continue;
        }
        let Ok(file) = fs::File::open(&path) else {
            continue;
        };
        let mut bytes = Vec::new();
        let read = if name.ends_with(".gz") {
            flate2::read::MultiGzDecoder::new(file).read_to_end(&mut bytes)
        } else {
            std::io::BufReader::new(file).read_to_end(&mut bytes)
        };
        if read.is_err() {
            continue;
        }
        files += 1;
        for line in bytes.split(|&b| b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<Value>(line)
                && let Some(id) = v["args"]
                    .as_str()
                    .and_then(|a| a.strip_prefix("id="))
                    .and_then(|n| n.parse().ok())
            {
                ids.insert(id);
            }
        }
    }
    (ids, files)
}

/// The request id an event came from.
fn event_request(e: &Value) -> Option<u64> {
    e["endpoint"].as_str()?.strip_prefix("/item/")?.parse().ok()
}

fn append_raw(path: &Path, bytes: &[u8]) {
    if let Ok(mut f) = OpenOptions::new().append(true).open(path) {
        let _ = f.write_all(bytes);
    }
}

#[test]
fn the_whole_system_under_load_and_faults_loses_nothing() {
    let seed = std::env::var("SYSTEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(1)
        });
    let seconds: u64 = std::env::var("SYSTEM_TEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!("system test: seed {seed} (SYSTEM_TEST_SEED={seed} replays it), {seconds} s of load");
    let mut rng = Rng(seed);

    let work_dir = KeptOnFailure(Some(tempfile::tempdir().unwrap()));
    let work = work_dir.path();
    let logs = work.join("logs");
    let state = work.join("state");
    fs::create_dir_all(&logs).unwrap();
    fs::create_dir_all(&state).unwrap();
    let as_nobody = is_root();
    for dir in [&work, &logs] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    if as_nobody {
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    }

    let (front, app, backend_port) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let _nginx = start_nginx(&work, &logs, front, app);
    let seen = Seen::new(Behaviour::default());
    let mut backend = Some(Backend::start(backend_port, seen.clone(), None));

    let config = work.join("agent.toml");
    fs::write(
        &config,
        format!(
            "log = [\"{logs}/access.log\"]\nformat = \"nginx_json\"\nws_url = \"ws://127.0.0.1:{backend_port}/ingest\"\ntoken = \"tok-system\"\nclient_id = \"system\"\nsecret_key = \"system-secret\"\npattern_dirs = []\nstate_dir = \"{state}\"\nack_timeout_ms = 3000\n",
            logs = logs.display(),
            state = state.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let runner = AgentRunner {
        config,
        stderr: work.join("agent.stderr"),
        as_nobody,
        pid: Arc::new(AtomicU32::new(0)),
    };
    let stderr_of = |r: &AgentRunner| fs::read_to_string(&r.stderr).unwrap_or_default();
    let mut agent = runner.start();
    let starting = Instant::now();
    while !stderr_of(&runner).contains(common::agent_process::READY) {
        assert!(
            starting.elapsed() < Duration::from_secs(60),
            "the agent never said it was ready:\n{}",
            stderr_of(&runner)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let memory = sample_memory(runner.pid.clone(), stop.clone());
    let rotated = Arc::new(AtomicUsize::new(0));
    let rotations = rotate(
        work.clone(),
        logs.clone(),
        seed,
        stop.clone(),
        rotated.clone(),
    );
    let load = Arc::new(Load::default());
    let total = seconds * RATE;
    let generators = generate_load(front, total, load.clone());

    // The faults, at random moments of the run.
    let mut plan: Vec<(f64, Fault)> = [
        Fault::AgentKill,
        Fault::AgentKill,
        Fault::AgentKill,
        Fault::AgentKillCheckpointCut,
        Fault::AgentDownTwoRotations,
        Fault::BackendRestart,
        Fault::BackendRestart,
        Fault::AckHold,
        Fault::AckHold,
        Fault::CloseMidBatch,
        Fault::CloseMidBatch,
        Fault::Garbage,
        Fault::InvalidUtf8,
        Fault::HugeLine,
        Fault::StateReadOnly,
    ]
    .into_iter()
    .map(|f| (rng.between(2.0, seconds as f64 - 3.0), f))
    .collect();
    plan.sort_by(|a, b| a.0.total_cmp(&b.0));
    let started = Instant::now();
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    let live = logs.join("access.log");
    for (at, fault) in plan {
        let due = started + Duration::from_secs_f64(at);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        *injected.entry(fault).or_default() += 1;
        println!(
            "  {:6.2} s: {fault:?} (request {})",
            started.elapsed().as_secs_f64(),
            load.sent.load(Ordering::SeqCst)
        );
        match fault {
            Fault::AgentKill | Fault::AgentKillCheckpointCut => {
                let _ = agent.kill();
                let _ = agent.wait();
                runner.pid.store(0, Ordering::SeqCst);
                if fault == Fault::AgentKillCheckpointCut {
                    let saved = state.join("checkpoints.json");
                    if let Ok(text) = fs::read(&saved) {
                        fs::write(&saved, &text[..text.len() / 2]).unwrap();
                    }
                }
                std::thread::sleep(Duration::from_secs_f64(rng.between(0.2, 1.5)));
                agent = runner.start();
            }
            Fault::AgentDownTwoRotations => {
                let _ = agent.kill();
                let _ = agent.wait();
                runner.pid.store(0, Ordering::SeqCst);
                // Down until logrotate has rotated twice (every 2 to 4 s),
                // and a moment more, so that the files it wrote meanwhile
                // are not from the second the agent starts in.
                let before = rotated.load(Ordering::SeqCst);
                let bound = Instant::now() + Duration::from_secs(20);
                while rotated.load(Ordering::SeqCst) < before + 2 && Instant::now() < bound {
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_millis(1500));
                agent = runner.start();
            }
            Fault::BackendRestart => {
                if let Some(b) = backend.take() {
                    b.stop();
                }
                std::thread::sleep(Duration::from_secs_f64(rng.between(0.5, 3.0)));
                backend = Some(Backend::start(backend_port, seen.clone(), None));
            }
            Fault::AckHold => {
                seen.behaviour.lock().unwrap().ack_delay =
                    Some(Duration::from_secs_f64(rng.between(1.0, 2.5)));
                std::thread::sleep(Duration::from_secs_f64(rng.between(2.0, 4.0)));
                seen.behaviour.lock().unwrap().ack_delay = None;
            }
            Fault::CloseMidBatch => {
                let n = seen.messages.load(Ordering::SeqCst);
                seen.behaviour.lock().unwrap().close_at_message = Some(n + 2);
            }
            Fault::Garbage => append_raw(&live, b"this is not an access log line at all\n"),
            Fault::InvalidUtf8 => append_raw(&live, b"\xff\xfe{\"remote_addr\":\"\xc3\x28\"}\n"),
            Fault::HugeLine => {
                let mut line = vec![b'x'; 1024 * 1024];
                line.push(b'\n');
                append_raw(&live, &line);
            }
            Fault::StateReadOnly => {
                // Read-only for a few seconds, and until the agent has tried
                // to save there (it saves only when acknowledgements moved
                // a checkpoint: after a backend restart that can take a
                // while on a busy machine), within a bound.
                let said = stderr_of(&runner)
                    .matches("cannot save checkpoints")
                    .count();
                fs::set_permissions(&state, fs::Permissions::from_mode(0o555)).unwrap();
                let until = Instant::now() + Duration::from_secs_f64(rng.between(2.0, 4.0));
                let bound = Instant::now() + Duration::from_secs(20);
                while Instant::now() < until
                    || (stderr_of(&runner)
                        .matches("cannot save checkpoints")
                        .count()
                        == said
                        && Instant::now() < bound)
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }
    for g in generators {
        g.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (created, copied) = rotations.join().unwrap();
    {
        let mut b = seen.behaviour.lock().unwrap();
        b.ack_delay = None;
        b.close_at_message = None;
    }

    // Drain: wait until every request on disk has reached the backend.
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    let (on_disk, files) = loop {
        let (on_disk, files) = ids_on_disk(&logs);
        let received: BTreeSet<u64> = seen
            .events
            .lock()
            .unwrap()
            .iter()
            .filter_map(event_request)
            .collect();
        if on_disk.is_subset(&received) || Instant::now() > drain_deadline {
            break (on_disk, files);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let stopping = Instant::now();
    send_sigterm(agent.id());
    let code = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status.code();
        }
        if stopping.elapsed() > EXIT_WITHIN {
            let _ = agent.kill();
            panic!(
                "the agent did not exit within {EXIT_WITHIN:?} of SIGTERM\n{}",
                stderr_of(&runner)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let peak_kib = memory.join().unwrap();
    drop(backend);

    // The checks.
    let events = seen.events.lock().unwrap().clone();
    let mut ids_of: HashMap<u64, BTreeSet<String>> = HashMap::new();
    let mut strays = Vec::new();
    for e in &events {
        match event_request(e) {
            Some(id) => {
                ids_of
                    .entry(id)
                    .or_default()
                    .insert(e["event_id"].as_str().unwrap_or_default().to_owned());
            }
            None => strays.push(e.clone()),
        }
    }
    let received: BTreeSet<u64> = ids_of.keys().copied().collect();
    let missing: Vec<u64> = on_disk.difference(&received).copied().collect();
    let answered = load.answered.lock().unwrap().clone();
    let dropped_by_logrotate = answered.difference(&on_disk).count();
    let delivered_then_dropped = received.difference(&on_disk).count();
    let unstable: Vec<(&u64, &BTreeSet<String>)> =
        ids_of.iter().filter(|(_, ids)| ids.len() > 1).collect();
    let repeats = events.len() - strays.len() - received.len();
    let stderr = stderr_of(&runner);
    let faults: Vec<String> = injected.iter().map(|(f, n)| format!("{f:?} {n}")).collect();
    // Written to stderr directly, not with println!: the test harness
    // captures the macros' output of a passing test, and this line is the
    // run's result that CI's log must show.
    let summary = format!(
        "system: requests sent {}, answered {}, lines on disk {} (in {files} files), events received {}, missing {}, repeats {repeats} (all with their first event_id: {}), dropped from disk by copytruncate {dropped_by_logrotate} (of which delivered before the truncate {delivered_then_dropped}), rotations {created} create + {copied} copytruncate, faults: {}, peak RSS {:.1} MiB, exit {:?}, seed {seed}",
        load.sent.load(Ordering::SeqCst),
        answered.len(),
        on_disk.len(),
        events.len(),
        missing.len(),
        unstable.is_empty(),
        faults.join(", "),
        peak_kib as f64 / 1024.0,
        code,
    );
    let _ = writeln!(std::io::stderr(), "{summary}");

    assert!(
        answered.len() as u64 * 100 >= total * 95,
        "nginx answered {} of {total} requests: the load did not run",
        answered.len()
    );
    assert!(created > 0 && copied > 0, "logrotate rotated both ways");
    assert!(
        missing.is_empty(),
        "{} requests on disk never reached the backend, e.g. {:?}\n{stderr}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        unstable.is_empty(),
        "lines sent with more than one event_id: {:?}",
        &unstable[..unstable.len().min(5)]
    );
    assert!(
        strays.is_empty(),
        "events that are no request: {:?}",
        &strays[..strays.len().min(3)]
    );
    assert!(
        stderr.contains("line longer than max_line_bytes"),
        "the 1 MiB line is reported\n{stderr}"
    );
    assert!(
        stderr.contains("not a JSON object") || stderr.contains("unparsed"),
        "garbage lines are reported as failed\n{stderr}"
    );
    assert!(
        stderr.contains("cannot save checkpoints"),
        "the read-only state folder is reported\n{stderr}"
    );
    assert!(
        peak_kib < RSS_BOUND_KIB,
        "peak RSS {peak_kib} KiB, bound {RSS_BOUND_KIB} KiB"
    );
    assert_eq!(code, Some(0), "exit status on SIGTERM\n{stderr}");
}

/// The run's folder, kept (and named) when the test fails, to look into.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> PathBuf {
        self.0
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("the run's folder is kept: {}", dir.keep().display());
        }
    }
}
