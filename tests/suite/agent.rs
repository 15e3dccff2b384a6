//! The whole agent in-process, with a sink of the test's own: one that
//! acknowledges, one that refuses (never acknowledges), one that is slow
//! and full. Only acknowledgements move checkpoints; a stop saves them; a
//! restart resumes from them without loss or repeat.

use crate::common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cerberus_agent::agent::{Agent, Report};
use cerberus_agent::cli::RunArgs;
use cerberus_agent::config::Layers;
use cerberus_agent::deliver::{AckPoint, EventSink};
use cerberus_agent::plan::{Plan, RunMode};
use cerberus_agent::source::{
    Handling, Input, Line, Look, Origin, PollOutcome, Source, SourceLine,
};
use cerberus_agent::wake::{Wake, Wakes};
use common::agent_process::access_line;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(20);

/// How the fake backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Acknowledges everything at each flush.
    Acknowledging,
    /// Takes events and never acknowledges them.
    Refusing,
    /// Is full while it holds `room` events unacknowledged, and
    /// acknowledges the 64 oldest per flush.
    Slow { room: usize },
}

#[derive(Default)]
struct Received {
    events: Vec<Value>,
    /// The most events held unacknowledged at once.
    peak_unacknowledged: usize,
}

struct FakeSink {
    behaviour: Behaviour,
    held: Vec<AckPoint>,
    acked: Vec<AckPoint>,
    received: Arc<Mutex<Received>>,
}

impl EventSink for FakeSink {
    fn push(&mut self, event: &[u8], origin: AckPoint) -> io::Result<()> {
        let v: Value = serde_json::from_slice(event).map_err(io::Error::other)?;
        self.held.push(origin);
        let mut r = self.received.lock().unwrap();
        r.events.push(v);
        r.peak_unacknowledged = r.peak_unacknowledged.max(self.held.len());
        Ok(())
    }

    fn flush(&mut self, _now: Instant) -> io::Result<()> {
        match self.behaviour {
            Behaviour::Acknowledging => self.acked.append(&mut self.held),
            Behaviour::Refusing => {}
            Behaviour::Slow { .. } => {
                let n = self.held.len().min(64);
                self.acked.extend(self.held.drain(..n));
            }
        }
        Ok(())
    }

    fn take_acks(&mut self, out: &mut Vec<AckPoint>) {
        out.append(&mut self.acked);
    }

    fn is_full(&self) -> bool {
        matches!(self.behaviour, Behaviour::Slow { room } if self.held.len() >= room)
    }

    fn deadline(&self) -> Option<Instant> {
        // A slow backend acknowledges a little later: come back soon.
        match self.behaviour {
            Behaviour::Slow { .. } if !self.held.is_empty() => {
                Some(Instant::now() + Duration::from_millis(1))
            }
            _ => None,
        }
    }

    fn close(&mut self) -> io::Result<()> {
        self.flush(Instant::now())
    }

    fn is_finished(&self) -> bool {
        self.held.is_empty()
    }
}

/// An agent running on its own thread.
struct Running {
    wakes: Wakes,
    received: Arc<Mutex<Received>>,
    thread: JoinHandle<anyhow::Result<Report>>,
}

fn plan(log: &Path, state: &Path, once: bool) -> Plan {
    let run = RunArgs {
        logs: vec![log.display().to_string()],
        format: Some("nginx_combined".into()),
        state_dir: Some(state.to_owned()),
        ..RunArgs::default()
    };
    let mut settings = Layers::new(
        None,
        cerberus_agent::cli::given_flags(&run.common, Some(&run)),
        HashMap::new(),
    )
    .settings()
    .expect("settings");
    settings.pattern_dirs.clear();
    settings.shutdown_timeout_ms = 300;
    let mode = RunMode {
        once,
        no_checkpoints: false,
        once_timeout: None,
    };
    Plan::from_settings(&settings, mode).expect("plan")
}

fn start(log: &Path, state: &Path, behaviour: Behaviour, once: bool) -> Running {
    start_with(log, state, behaviour, once, Vec::new())
}

/// As [`start`], with sources of the test's own beside the plan's files.
fn start_with(
    log: &Path,
    state: &Path,
    behaviour: Behaviour,
    once: bool,
    inputs: Vec<Input>,
) -> Running {
    let plan = plan(log, state, once);
    let wakes = Wakes::new();
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = FakeSink {
        behaviour,
        held: Vec::new(),
        acked: Vec::new(),
        received: received.clone(),
    };
    let agent_wakes = wakes.clone();
    let telemetry = Arc::new(cerberus_agent::metrics::Telemetry::default());
    let agent_telemetry = telemetry.clone();
    let thread = std::thread::spawn(move || {
        Agent::start_with_inputs(
            plan,
            None,
            Box::new(sink),
            &agent_wakes,
            agent_telemetry,
            inputs,
        )?
        .run()
    });
    // Ready once its first look at the files is done: a line appended from
    // now on is read (a file found at start is read from its end).
    let started = Instant::now();
    while !telemetry.started.load(std::sync::atomic::Ordering::Relaxed) && !thread.is_finished() {
        assert!(started.elapsed() < PATIENCE, "the agent never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    Running {
        wakes,
        received,
        thread,
    }
}

impl Running {
    fn ids(&self) -> Vec<usize> {
        let r = self.received.lock().unwrap();
        r.events.iter().map(common::agent_process::id_of).collect()
    }

    fn wait_for(&self, n: usize) {
        let started = Instant::now();
        while self.ids().len() < n {
            assert!(
                started.elapsed() < PATIENCE,
                "only {} of {n} events arrived",
                self.ids().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What SIGTERM does: wake the loop to stop; returns what [`Running::join`]
    /// does.
    fn stop(self) -> (Report, Vec<usize>, Vec<String>) {
        self.wakes.waker().wake(Wake::Shutdown);
        self.join()
    }

    /// Waits for the agent to end (`--once`); returns its report, and the
    /// ids and `event_id`s of what the sink received, in order.
    fn join(self) -> (Report, Vec<usize>, Vec<String>) {
        let report = self
            .thread
            .join()
            .expect("agent thread")
            .expect("agent ran");
        let r = self.received.lock().unwrap();
        let ids = r.events.iter().map(common::agent_process::id_of).collect();
        let event_ids = r
            .events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        (report, ids, event_ids)
    }
}

fn append(path: &Path, ids: std::ops::Range<usize>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for id in ids {
        f.write_all(access_line(id).as_bytes()).unwrap();
    }
}

#[test]
fn follows_appends_and_resumes_after_a_stop_without_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, 0..5); // existing content: a new file starts at its end
    let agent = start(&log, state.path(), Behaviour::Acknowledging, false);
    append(&log, 5..10);
    agent.wait_for(5);
    let (report, ids, _) = agent.stop();
    assert_eq!(ids, (5..10).collect::<Vec<_>>());
    assert_eq!((report.acknowledged, report.unacknowledged), (5, 0));

    append(&log, 10..15);
    let agent = start(&log, state.path(), Behaviour::Acknowledging, false);
    agent.wait_for(5);
    std::thread::sleep(Duration::from_millis(300));
    let (_, ids, _) = agent.stop();
    assert_eq!(
        ids,
        (10..15).collect::<Vec<_>>(),
        "resumed from the checkpoint: nothing lost, nothing repeated"
    );
}

#[test]
fn only_acknowledged_lines_move_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, 0..20);
    // --once reads from the beginning; a backend that never acknowledges
    // holds the agent until the stop, which gives up after its timeout.
    let agent = start(&log, state.path(), Behaviour::Refusing, true);
    agent.wait_for(20);
    let (report, _, first_ids) = agent.stop();
    assert_eq!((report.acknowledged, report.unacknowledged), (0, 20));

    let agent = start(&log, state.path(), Behaviour::Acknowledging, true);
    let (report, ids, again) = agent.join();
    assert_eq!(ids, (0..20).collect::<Vec<_>>(), "everything is sent again");
    assert_eq!(again, first_ids, "with the same event_ids");
    assert_eq!(report.acknowledged, 20);
}

#[test]
fn a_slow_full_sink_holds_the_reading_back_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, 0..30_000);
    let agent = start(&log, state.path(), Behaviour::Slow { room: 50 }, true);
    let received = agent.received.clone();
    let (report, ids, _) = agent.join();
    assert_eq!(ids, (0..30_000).collect::<Vec<_>>(), "in order, each once");
    assert_eq!(report.acknowledged, 30_000);
    // A full sink stops the reading: at most one poll's worth (8192 lines)
    // goes past it, not the whole file.
    let peak = received.lock().unwrap().peak_unacknowledged;
    assert!(peak <= 50 + 8192, "{peak} held at once");
}

#[test]
fn waits_for_a_path_that_does_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = dir.path().join("later.log");
    let agent = start(&log, state.path(), Behaviour::Acknowledging, false);
    append(&log, 0..3);
    agent.wait_for(3);
    let (_, ids, _) = agent.stop();
    assert_eq!(ids, vec![0, 1, 2]);
}

/// A source kind of the test's own, to show that one plugs into the agent
/// with no change elsewhere: lines held in memory (one part, stream
/// [`MEMORY_STREAM`]), a line's position its index, and the position below
/// which everything was delivered saved as a number in a file.
struct MemorySource {
    lines: Vec<Vec<u8>>,
    /// The first lines, which the pipeline detects the format from.
    head: Vec<Vec<u8>>,
    next: usize,
    /// (start, end) of lines handed on and not acknowledged, in order.
    in_flight: std::collections::VecDeque<(u64, u64)>,
    saved: u64,
    positions: std::path::PathBuf,
}

const MEMORY_STREAM: u64 = 0xfeed;

impl MemorySource {
    /// Resumes from the position saved in `positions`, if any.
    fn new(lines: Vec<Vec<u8>>, positions: &Path) -> Self {
        let saved: u64 = std::fs::read_to_string(positions)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        MemorySource {
            head: lines.iter().take(20).cloned().collect(),
            lines,
            next: saved as usize,
            in_flight: Default::default(),
            saved,
            positions: positions.to_owned(),
        }
    }

    fn delivered(&self) -> u64 {
        self.in_flight
            .front()
            .map_or(self.next as u64, |(start, _)| *start)
    }
}

impl Source for MemorySource {
    fn look(&mut self, _why: Look) -> io::Result<()> {
        Ok(())
    }

    fn poll(
        &mut self,
        budget: usize,
        emit: &mut dyn FnMut(SourceLine<'_>) -> Handling,
    ) -> io::Result<PollOutcome> {
        let mut outcome = PollOutcome::default();
        while self.next < self.lines.len() {
            if outcome.lines == budget {
                outcome.more = true;
                break;
            }
            let i = self.next as u64;
            let line = SourceLine {
                origin: Origin {
                    extra: &[],
                    name: Path::new("memory:queue"),
                    log: 0,
                    head: &self.head,
                },
                part: 0,
                stream: MEMORY_STREAM,
                line: Line {
                    bytes: &self.lines[self.next],
                    offset: i,
                    end: i + 1,
                    number: i + 1,
                    truncated: false,
                    fresh: true,
                    time: None,
                },
            };
            self.next += 1;
            outcome.lines += 1;
            if emit(line) == Handling::Pending {
                self.in_flight.push_back((i, i + 1));
            }
        }
        Ok(outcome)
    }

    fn acknowledge(&mut self, part: u64, end: u64) {
        assert_eq!(part, 0, "acknowledged with the part it was handed on with");
        while self.in_flight.front().is_some_and(|(_, e)| *e <= end) {
            self.in_flight.pop_front();
        }
    }

    fn settle(&mut self) {}

    fn positions_dirty(&self) -> bool {
        self.delivered() != self.saved
    }

    fn save_positions(&mut self, force: bool) -> io::Result<()> {
        if force || self.positions_dirty() {
            self.saved = self.delivered();
            std::fs::write(&self.positions, self.saved.to_string())?;
        }
        Ok(())
    }

    fn origins(&self, visit: &mut dyn FnMut(Origin<'_>)) {
        visit(Origin {
            extra: &[],
            name: Path::new("memory:queue"),
            log: 0,
            head: &self.head,
        });
    }
}

fn memory_input(lines: &[Vec<u8>], positions: &Path) -> Vec<Input> {
    vec![Input {
        source: Box::new(MemorySource::new(lines.to_vec(), positions)),
        formats: vec![None],
    }]
}

fn saved_position(positions: &Path) -> u64 {
    std::fs::read_to_string(positions)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The `event_id` the agent gives line `index` of the memory source.
fn memory_event_id(index: u64) -> String {
    format!("{MEMORY_STREAM:016x}{index:016x}")
}

#[test]
fn a_source_kind_of_its_own_plugs_into_the_whole_agent() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let positions = state.path().join("memory-position");
    let no_file = dir.path().join("none.log");
    let mut lines: Vec<Vec<u8>> = (0..300)
        .map(|i| access_line(i).trim_end().as_bytes().to_vec())
        .collect();
    // A line no pattern reads: counted, and delivered as far as positions
    // go (nothing to send).
    lines.insert(150, b"not an access line".to_vec());

    // A slow sink acknowledges a little at a time: the format is detected
    // from the source's head, every line goes out once, in order, with the
    // event_id of its position, and the position saved at the end is past
    // the last line.
    let inputs = memory_input(&lines, &positions);
    let agent = start_with(
        &no_file,
        state.path(),
        Behaviour::Slow { room: 40 },
        true,
        inputs,
    );
    let (report, ids, event_ids) = agent.join();
    assert_eq!(ids, (0..300).collect::<Vec<_>>());
    let expected: Vec<String> = (0..301u64)
        .filter(|&i| i != 150)
        .map(memory_event_id)
        .collect();
    assert_eq!(event_ids, expected);
    assert_eq!((report.acknowledged, report.lines_failed), (300, 1));
    assert_eq!(saved_position(&positions), 301);

    // New lines, and a backend that takes them and never acknowledges:
    // the position stays where it was.
    for i in 300..350 {
        lines.push(access_line(i).trim_end().as_bytes().to_vec());
    }
    let inputs = memory_input(&lines, &positions);
    let agent = start_with(&no_file, state.path(), Behaviour::Refusing, false, inputs);
    agent.wait_for(50);
    let (report, ids, refused) = agent.stop();
    assert_eq!(ids, (300..350).collect::<Vec<_>>());
    assert_eq!((report.acknowledged, report.unacknowledged), (0, 50));
    assert_eq!(
        saved_position(&positions),
        301,
        "moved only by acknowledgements"
    );

    // The next run sends them again, with the same event_ids, and moves
    // the position once they are acknowledged.
    let inputs = memory_input(&lines, &positions);
    let agent = start_with(
        &no_file,
        state.path(),
        Behaviour::Acknowledging,
        true,
        inputs,
    );
    let (report, ids, again) = agent.join();
    assert_eq!(ids, (300..350).collect::<Vec<_>>());
    assert_eq!(again, refused);
    assert_eq!(report.acknowledged, 50);
    assert_eq!(saved_position(&positions), 351);
}
