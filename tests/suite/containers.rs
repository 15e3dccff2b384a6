//! Container logs as the runtimes and the kubelet write them: CRI and
//! Docker records byte for byte (16 KiB pieces of long lines, both streams
//! interleaved, times with offsets), rotated the kubelet's way (rename
//! with a time suffix, gzip on the next rotation through `.tmp`, the
//! oldest deleted beyond five files, a restart's `1.log`, a deleted pod's
//! folder), read by the agent through `kill -9` and a backend away.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use common::programs::python_backend;

/// How long a test waits for something before it fails.
const PATIENCE: Duration = Duration::from_secs(180);

/// The node's clock, in microseconds from the first record.
static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// containerd's piece size.
const CRI_PIECE: usize = 16 * 1024;

/// One container's log folder under a kubelet's `/var/log/pods`, written
/// as containerd writes and rotated as the kubelet rotates.
struct ContainerLog {
    dir: PathBuf,
    restart: u32,
    file: fs::File,
    written: u64,
    /// Rotations so far: the suffix's clock (one second a rotation).
    rotations: u64,
    /// Rotate when the file passes this (the kubelet's containerLogMaxSize).
    max_size: u64,
    records: u64,
}

impl ContainerLog {
    fn new(pods: &Path, namespace: &str, pod: &str, uid: &str, container: &str) -> Self {
        let dir = pods
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(container);
        fs::create_dir_all(&dir).expect("pod folder");
        let file = open_append(&dir.join("0.log"));
        ContainerLog {
            dir,
            restart: 0,
            file,
            written: 0,
            rotations: 0,
            max_size: 96 * 1024,
            records: 0,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.restart))
    }

    /// Writes `line` on `stream` as CRI records: pieces of 16 KiB marked
    /// `P`, the last `F`; times alternate between `Z` and an offset.
    fn write(&mut self, stream: &str, line: &str) {
        let bytes = line.as_bytes();
        let mut pieces: Vec<&[u8]> = bytes.chunks(CRI_PIECE).collect();
        if pieces.is_empty() {
            pieces.push(b"");
        }
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            self.records += 1;
            // The runtime's clock, one for the node: a record a
            // microsecond, every other time written with an offset.
            let now = CLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (s, us) = (now / 1_000_000, now % 1_000_000);
            let time = if self.records.is_multiple_of(2) {
                format!("2026-12-06T23:{:02}:{:02}.{us:06}123Z", 35 + s / 60, s % 60)
            } else {
                format!(
                    "2026-12-07T00:{:02}:{:02}.{us:06}123+01:00",
                    35 + s / 60,
                    s % 60
                )
            };
            let tag = if i + 1 == pieces.len() { "F" } else { "P" };
            out.extend_from_slice(format!("{time} {stream} {tag} ").as_bytes());
            out.extend_from_slice(piece);
            out.push(b'\n');
        }
        self.file.write_all(&out).expect("write a record");
        self.written += out.len() as u64;
        if self.written >= self.max_size {
            self.rotate();
        }
    }

    /// The kubelet's rotation: drop `.tmp` leftovers, delete the oldest
    /// rotated files beyond three (five files with the live one and the
    /// newest), gzip the rotated files still uncompressed (through `.tmp`,
    /// then renamed), then rename the live file with a time suffix and have
    /// the runtime reopen it.
    fn rotate(&mut self) {
        let live = self.path();
        let name = live.file_name().unwrap().to_string_lossy().into_owned();
        let mut rotated: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("{name}.")) && !n.ends_with(".tmp")
            })
            .collect();
        rotated.sort();
        while rotated.len() > 3 {
            fs::remove_file(rotated.remove(0)).expect("delete the oldest");
        }
        for old in rotated
            .iter()
            .filter(|p| p.extension().is_none_or(|e| e != "gz"))
        {
            let tmp = PathBuf::from(format!("{}.tmp", old.display()));
            let mut gz =
                flate2::write::GzEncoder::new(fs::File::create(&tmp).unwrap(), Default::default());
            gz.write_all(&fs::read(old).unwrap()).unwrap();
            gz.finish().unwrap().sync_all().unwrap();
            fs::rename(&tmp, format!("{}.gz", old.display())).unwrap();
            fs::remove_file(old).unwrap();
        }
        self.rotations += 1;
        let stamp = format!(
            "20261206-{:02}{:02}{:02}",
            self.rotations / 3600 % 24,
            self.rotations / 60 % 60,
            self.rotations % 60
        );
        fs::rename(&live, format!("{}.{stamp}", live.display())).expect("rename");
        self.file = open_append(&live);
        self.written = 0;
    }

    /// The container restarted: the runtime writes `<restart + 1>.log`.
    fn restart(&mut self) {
        self.restart += 1;
        self.file = open_append(&self.path());
        self.written = 0;
    }
}

fn open_append(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open a container log")
}

/// An nginx combined line for request `i` of `pod`, padded to `pad` bytes
/// of user agent.
fn access(pod: &str, i: usize, pad: usize) -> String {
    format!(
        "10.1.{}.{} - - [06/Dec/2026:23:35:41 +0000] \"GET /{pod}/{i} HTTP/1.1\" 200 5 \"-\" \"curl/8 {}\"",
        i / 250 % 250,
        i % 250 + 1,
        "x".repeat(pad)
    )
}

/// Writes requests `range` of `pod` into `log`: every 7th line long enough
/// for two 16 KiB pieces, a stderr message between every two.
fn traffic(log: &mut ContainerLog, pod: &str, range: std::ops::Range<usize>) {
    for i in range {
        let pad = if i.is_multiple_of(97) {
            2 * CRI_PIECE + 100
        } else {
            20
        };
        log.write("stdout", &access(pod, i, pad));
        if i.is_multiple_of(2) {
            log.write("stderr", &format!("worker {i}: something on stderr"));
        }
    }
}

/// What the backend stored: per endpoint, the events it came in.
fn stored(received: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let text = fs::read_to_string(received).unwrap_or_default();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let endpoint = e["endpoint"].as_str().unwrap_or_default().to_owned();
        out.entry(endpoint).or_default().push(e);
    }
    out
}

fn wait_until(what: &str, log: &Path, done: impl FnMut() -> bool) {
    let context = || {
        let checkpoints = log
            .parent()
            .and_then(|d| fs::read_to_string(d.join("state/checkpoints.json")).ok());
        format!(
            "{}\ncheckpoints: {}",
            fs::read_to_string(log).unwrap_or_default(),
            checkpoints.unwrap_or_default()
        )
    };
    common::wait_until(what, PATIENCE, context, done);
}

/// Whether the saved checkpoints say the file now at `path` is delivered
/// to its end.
fn saved_to_end(state: &Path, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    let Ok(text) = fs::read_to_string(state.join("checkpoints.json")) else {
        return false;
    };
    let Ok(store) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    store["files"].as_array().is_some_and(|files| {
        files
            .iter()
            .any(|c| c["inode"] == meta.ino() && c["offset"] == meta.len())
    })
}

/// A process the test started, killed when the test ends, even by a
/// failure (a leftover agent or backend would outlive the test).
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent following every container log under `pods`, once it said it
/// is ready.
fn start_agent(pods: &Path, state: &Path, port: u16, log: &Path) -> Started {
    let said_ready = || {
        fs::read_to_string(log)
            .unwrap_or_default()
            .matches(common::agent_process::READY)
            .count()
    };
    let before = said_ready();
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    let child = Command::new(common::agent_bin())
        .arg("--log")
        .arg(format!("{}/*/*/*.log", pods.display()))
        .args([
            "--from-beginning",
            "--format",
            "nginx_combined",
            "--node-name",
            "node-7",
            "--secret-key",
            "container-test-key",
            "--metrics-addr",
            "127.0.0.1:0",
            "--ws-url",
            &format!("ws://127.0.0.1:{port}/"),
        ])
        .arg("--state-dir")
        .arg(state)
        .env("CERBERUS_LOG_FILTER", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start the agent");
    let agent = Started(child);
    wait_until("the agent ready", log, || said_ready() > before);
    agent
}

#[test]
fn every_container_line_reaches_the_backend_once_through_kubelet_rotations_kill_and_restarts() {
    let work = tempfile::tempdir().unwrap();
    let pods = work.path().join("pods");
    let state = work.path().join("state");
    let received = work.path().join("received.jsonl");
    let log = work.path().join("agent.log");
    let uid_a = "0b6f9a52-3c1e-4d7a-9f0e-2a1b3c4d5e6f";
    let uid_b = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
    let mut web = ContainerLog::new(&pods, "shop", "web-1", uid_a, "nginx");
    let mut api = ContainerLog::new(&pods, "shop", "api-2", uid_b, "nginx");
    let port = common::free_port();
    let backend = Started(python_backend(port, &received, &["--wire", "batch"]));

    let agent = start_agent(&pods, &state, port, &log);
    traffic(&mut web, "web", 0..400);
    traffic(&mut api, "api", 0..400);
    let delivered = |pod: &str, range: std::ops::Range<usize>| {
        let got = stored(&received);
        range
            .clone()
            .all(|i| got.contains_key(&format!("/{pod}/{i}")))
    };
    wait_until("the first 400 of each pod", &log, || {
        delivered("web", 0..400) && delivered("api", 0..400)
    });

    // Everything so far is delivered and its checkpoints saved: the
    // repeats after the kill below are the lines read since.
    wait_until("the checkpoints saved", &log, || {
        saved_to_end(&state, &web.path()) && saved_to_end(&state, &api.path())
    });

    // The backend goes away; the agent reads on and cannot deliver; it is
    // killed, and the kubelet rotates (and compresses what the agent had
    // read but not delivered) while it is down.
    drop(backend);
    traffic(&mut web, "web", 400..520);
    drop(agent);
    traffic(&mut web, "web", 520..760);
    let mut agent = start_agent(&pods, &state, port, &log);
    traffic(&mut web, "web", 760..800);
    let backend = Started(python_backend(port, &received, &["--wire", "batch"]));
    // The container restarts: its next log is 1.log.
    web.restart();
    traffic(&mut web, "web", 800..900);
    // The other pod writes its last lines and is deleted: the agent reads
    // its open file to the end.
    traffic(&mut api, "api", 400..550);
    wait_until("api's lines up to 550", &log, || delivered("api", 400..550));
    traffic(&mut api, "api", 550..600);
    fs::remove_dir_all(pods.join(format!("shop_api-2_{uid_b}"))).expect("delete the pod");
    traffic(&mut web, "web", 900..1100);

    let expected: BTreeSet<String> = (0..1100)
        .map(|i| format!("/web/{i}"))
        .chain((0..600).map(|i| format!("/api/{i}")))
        .collect();
    wait_until("every access line", &log, || {
        let got = stored(&received);
        expected.iter().all(|e| got.contains_key(e))
    });
    // The deleted pod's files are read to their end and gone: the
    // checkpoint store forgets them (after rotate_wait, at its next look
    // for files that are gone).
    wait_until("the deleted pod forgotten", &log, || {
        fs::read_to_string(state.join("checkpoints.json")).is_ok_and(|s| !s.contains("api-2"))
    });
    common::agent_process::send_sigterm(agent.0.id());
    let _ = agent.0.wait();
    drop(backend);

    let got = stored(&received);
    let endpoints: BTreeSet<String> = got.keys().cloned().collect();
    assert_eq!(endpoints, expected, "exactly the stdout access lines");
    for (endpoint, events) in &got {
        let ids: BTreeSet<&str> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "{endpoint} came with several event_ids: {ids:?}"
        );
        let (pod, i) = endpoint[1..].split_once('/').expect("/pod/i");
        let i: usize = i.parse().expect("a number");
        let k = &events[0]["kubernetes"];
        assert_eq!(k["namespace"], "shop", "{endpoint}: {k}");
        assert_eq!(
            k["pod"],
            format!("{pod}-{}", if pod == "web" { 1 } else { 2 })
        );
        assert_eq!(k["container"], "nginx");
        assert_eq!(k["node"], "node-7");
        let restart = u64::from(pod == "web" && i >= 800);
        assert_eq!(k["restart"], restart, "{endpoint}: {k}");
        let pad = if i.is_multiple_of(97) {
            2 * CRI_PIECE + 100
        } else {
            20
        };
        assert_eq!(
            events[0]["user_agent"].as_str().map(str::len),
            Some(7 + pad),
            "{endpoint}: the line's pieces joined whole"
        );
    }
    let repeats: usize = got.values().map(|e| e.len() - 1).sum();
    eprintln!(
        "{} events stored, {repeats} repeats (each with its first event_id)",
        got.len()
    );
    let agent_log = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        agent_log.contains("(compressed meanwhile)"),
        "a file the kubelet compressed while the agent was down was finished from its copy:\n{agent_log}"
    );
    assert!(
        !agent_log.contains("ERROR") && !agent_log.contains("cerberus-agent check` shows the line"),
        "{agent_log}"
    );
}

/// Hundreds of kubelet rotations of one busy container (an hour's worth at
/// a few MiB/s, sped up): every line comes out once, and the checkpoint
/// store ends up holding about as many entries as there are files on disk,
/// not one per rotation.
#[test]
fn hundreds_of_rotations_leave_a_checkpoint_store_the_size_of_the_disk() {
    let work = tempfile::tempdir().unwrap();
    let pods = work.path().join("pods");
    let state = work.path().join("state");
    fs::create_dir_all(&state).unwrap();
    let mut web = ContainerLog::new(
        &pods,
        "shop",
        "web-1",
        "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        "nginx",
    );
    web.max_size = 8 * 1024;
    let glob = format!("{}/*/*/*.log", pods.display());
    let mut agent = common::agent_process::RunningAgent::start(
        &state,
        &["--log", &glob, "--format", "nginx_combined"],
    );
    let mut written = 0;
    while web.rotations < 300 {
        // Two rotations' worth at a time: the kubelet keeps three rotated
        // files, so a slower reader loses nothing.
        let start = web.rotations;
        while web.rotations < start + 2 {
            web.write("stdout", &access("web", written, 20));
            written += 1;
        }
        agent.wait_for(written, PATIENCE);
    }
    let files_on_disk = fs::read_dir(web.dir.clone()).unwrap().count();
    let entries = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .and_then(|v| v["files"].as_array().map(Vec::len))
            .unwrap_or(usize::MAX)
    };
    let start = Instant::now();
    let mut store = String::new();
    while start.elapsed() < PATIENCE {
        store = fs::read_to_string(state.join("checkpoints.json")).unwrap_or_default();
        if entries(&store) <= files_on_disk + 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        entries(&store) <= files_on_disk + 1,
        "{} checkpoints for {files_on_disk} files after 300 rotations: {store}",
        entries(&store)
    );
    agent.drain(Duration::from_millis(500));
    let mut seen = BTreeSet::new();
    for e in &agent.seen {
        let endpoint = e["endpoint"].as_str().unwrap_or_default().to_owned();
        assert!(seen.insert(endpoint.clone()), "{endpoint} came out twice");
    }
    assert_eq!(seen.len(), written, "every line once");
}

/// The events the agent makes of a sample log read as a plain file,
/// without their `event_id` (which rests on the file's bytes).
fn expected_events(name: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let path = common::repo().join(format!("tests/samples/{name}.log"));
    let (events, _) = read_once(&path, extra, &[]);
    events
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().map(|o| o.remove("event_id"));
            e
        })
        .collect()
}

/// Runs the agent once over `glob` with the format detected; its events,
/// and what it said.
fn read_once(
    glob: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Vec<serde_json::Value>, String) {
    let state = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--log",
        glob.to_str().unwrap(),
        "--once",
        "--stdout",
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = common::programs::run_agent(&args, env);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    (common::programs::printed_events(&out.stdout), said)
}

/// Each sample line cut in two CRI pieces (`P`, then `F`), with a stderr
/// record between every two: ingress-nginx's `upstreaminfo` lines are
/// detected inside them and give the sample's events, each with its pod.
#[test]
fn ingress_nginx_lines_in_cri_records_are_detected_and_read_whole() {
    let work = tempfile::tempdir().unwrap();
    let pods = work.path().join("pods");
    let mut log = ContainerLog::new(
        &pods,
        "ingress-nginx",
        "ingress-nginx-controller-5d88495688-x7k2p",
        "3f2e1d0c-9b8a-4776-8565-4a3b2c1d0e9f",
        "controller",
    );
    log.max_size = u64::MAX;
    let sample =
        fs::read_to_string(common::repo().join("tests/samples/ingress_nginx.log")).unwrap();
    for (i, line) in sample.lines().enumerate() {
        let cut = line.len() / 2;
        let mut out = Vec::new();
        for (tag, piece) in [("P", &line[..cut]), ("F", &line[cut..])] {
            out.extend_from_slice(
                format!("2026-12-06T18:44:30.{i:09}Z stdout {tag} {piece}\n").as_bytes(),
            );
        }
        log.file.write_all(&out).unwrap();
        if i % 2 == 1 {
            log.write(
                "stderr",
                "I1206 18:44:30.000000 7 controller.go:190] Configuration changes detected",
            );
        }
    }
    let (events, said) = read_once(&pods.join("*/*/*.log"), &[], &[]);
    assert!(said.contains("format detected: ingress_nginx"), "{said}");
    let expected = expected_events("ingress_nginx", &[]);
    assert_eq!(events.len(), expected.len(), "{said}");
    for (got, want) in events.iter().zip(&expected) {
        let mut got = got.clone();
        let k = got
            .as_object_mut()
            .and_then(|o| {
                o.remove("event_id");
                o.remove("kubernetes")
            })
            .expect("pod metadata");
        assert_eq!(&got, want);
        assert_eq!(k["pod"], "ingress-nginx-controller-5d88495688-x7k2p");
        assert_eq!(k["container"], "controller");
    }
}

/// Docker's json-file: each sample line in pieces of 40 bytes (Docker's
/// 16 KB, scaled down: the pieces of a line lack the `\n` but the last),
/// JSON-escaped as Docker escapes it; the events are the sample's, each
/// with the container's id.
#[test]
fn docker_json_file_lines_are_joined_and_read() {
    let work = tempfile::tempdir().unwrap();
    let id = "4f1c0e6a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbcc0";
    let dir = work.path().join("containers").join(id);
    fs::create_dir_all(&dir).unwrap();
    let sample =
        fs::read_to_string(common::repo().join("tests/samples/nginx_combined.log")).unwrap();
    let mut out = String::new();
    for line in sample.lines() {
        let with_newline = format!("{line}\n");
        let chars: Vec<char> = with_newline.chars().collect();
        for piece in chars.chunks(40) {
            let piece: String = piece.iter().collect();
            out.push_str(
                &serde_json::to_string(&serde_json::json!({
                    "log": piece, "stream": "stdout", "time": "2026-12-06T18:44:30.123456789Z"
                }))
                .unwrap(),
            );
            out.push('\n');
        }
        out.push_str(
            r#"{"log":"worker exiting\n","stream":"stderr","time":"2026-12-06T18:44:30.2Z"}"#,
        );
        out.push('\n');
    }
    fs::write(dir.join(format!("{id}-json.log")), out).unwrap();
    let (events, said) = read_once(
        &work.path().join("containers/*/*-json.log"),
        &["--format", "nginx_combined"],
        &[],
    );
    let expected = expected_events("nginx_combined", &["--format", "nginx_combined"]);
    assert_eq!(events.len(), expected.len(), "{said}");
    for (got, want) in events.iter().zip(&expected) {
        let mut got = got.clone();
        let c = got
            .as_object_mut()
            .and_then(|o| {
                o.remove("event_id");
                o.remove("container")
            })
            .expect("container metadata");
        assert_eq!(&got, want);
        assert_eq!(c["id"], id);
    }
}

/// The kubelet's links in /var/log/containers, followed into
/// /var/log/pods as `follow_symlinks_into` allows: each event names the
/// container by the link's name (pod, namespace, container, id); a link
/// pointing elsewhere is not followed.
#[test]
fn the_kubelets_links_name_the_container() {
    let work = tempfile::tempdir().unwrap();
    let pods = work.path().join("pods");
    let links = work.path().join("containers");
    fs::create_dir_all(&links).unwrap();
    let mut log = ContainerLog::new(
        &pods,
        "shop",
        "web-1",
        "0b6f9a52-3c1e-4d7a-9f0e-2a1b3c4d5e6f",
        "nginx",
    );
    log.write("stdout", &access("web", 1, 20));
    let id = "4f1c0e6a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbcc0";
    std::os::unix::fs::symlink(log.path(), links.join(format!("web-1_shop_nginx-{id}.log")))
        .unwrap();
    let secret = work.path().join("secret.log");
    fs::write(&secret, access("secret", 1, 20) + "\n").unwrap();
    std::os::unix::fs::symlink(&secret, links.join(format!("evil_shop_x-{id}.log"))).unwrap();
    let pods_arg = pods.display().to_string();
    let (events, said) = read_once(
        &links.join("*.log"),
        &["--format", "nginx_combined"],
        &[("CERBERUS_FOLLOW_SYMLINKS_INTO", &pods_arg)],
    );
    assert_eq!(events.len(), 1, "{events:?}\n{said}");
    let k = &events[0]["kubernetes"];
    assert_eq!(
        (
            &k["pod"],
            &k["namespace"],
            &k["container"],
            &k["container_id"]
        ),
        (&"web-1".into(), &"shop".into(), &"nginx".into(), &id.into()),
        "{k}"
    );
    assert!(
        said.contains("evil_shop_x"),
        "the link out of the folders is named: {said}"
    );
}
