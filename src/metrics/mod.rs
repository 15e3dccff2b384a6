//! Metrics and health: what an operator's monitoring asks of the agent.
//!
//! Each stage counts what it does in its own atomics ([`Counters`] for
//! lines, [`TailStats`] for files, [`SenderStats`] for the backend), which
//! cost a relaxed add on the hot path. [`Telemetry`] gathers them; the
//! metrics thread ([`serve`]) reads and folds them into Prometheus text
//! (with `prometheus-client`) only when scraped, at `--metrics-addr`:
//!
//! - `/metrics`: every counter and gauge, as OpenMetrics when the scraper
//!   asks for it (`Accept: application/openmetrics-text`, as Prometheus
//!   does), else in the Prometheus text format 0.0.4 (curl, older
//!   scrapers, `promtool check metrics`): each under its own content type;
//! - `/health`: 200 while the agent reads and delivers; 503, with the reason
//!   in the JSON body, when the backend has failed for longer than
//!   `health_backend_grace_s`, the secret key is still missing, or a watched
//!   file cannot be read;
//! - `/ready`: 200 once the agent started (patterns loaded, files found)
//!   and, with a backend, connected once.
//!
//! The server ([`http`]) runs on its own thread, bounded against whoever
//! can reach the port: scrapes never touch the agent's loop.

mod http;

pub use http::serve;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::deliver::backend::SenderStats;
use crate::deliver::backend::stats::now_ms;
use crate::diagnostics::{Counters, FailReason};
use crate::tail::TailStats;

/// Everything the metrics and the health check read, shared with the
/// stages that count.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub lines: Arc<Counters>,
    pub tail: Arc<TailStats>,
    pub journal: Arc<crate::journal::JournalStats>,
    /// With a backend.
    pub sender: Option<Arc<SenderStats>>,
    /// The secret key is needed (fetched from the backend) and not there
    /// yet.
    pub key_missing: AtomicBool,
    /// The agent started: patterns loaded, files found.
    pub started: AtomicBool,
    /// Reloads (SIGHUP) applied, and refused (the old configuration
    /// stayed in force).
    pub reloads: AtomicU64,
    pub reloads_failed: AtomicU64,
}

/// The state `/health` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    Failing(String),
}

impl Telemetry {
    /// Whether the agent works, by the health rule (see the module doc).
    pub fn health(&self, grace: Duration) -> Health {
        if self.key_missing.load(Ordering::Relaxed) {
            return Health::Failing("the secret key could not be fetched yet".into());
        }
        let unreadable = self.tail.unreadable.load(Ordering::Relaxed);
        if unreadable > 0 {
            return Health::Failing(format!("{unreadable} watched files cannot be read"));
        }
        if let Some(sender) = &self.sender {
            let since = sender.failing_since_ms.load(Ordering::Relaxed);
            let failing_ms = now_ms().saturating_sub(since);
            if since != 0 && failing_ms >= grace.as_millis() as u64 {
                return Health::Failing(format!(
                    "the backend has failed for {} s (unreachable, or refusing events)",
                    failing_ms / 1000
                ));
            }
        }
        Health::Ok
    }

    /// Whether the agent is ready: started and, with a backend, connected
    /// once.
    pub fn ready(&self) -> bool {
        self.started.load(Ordering::Relaxed)
            && self
                .sender
                .as_ref()
                .is_none_or(|s| s.ever_connected.load(Ordering::Relaxed))
    }

    /// The metrics as OpenMetrics text (see [`Exposition`] for the
    /// Prometheus text format).
    pub fn exposition(&self) -> String {
        let mut registry = Registry::with_prefix("cerberus_agent");
        self.register_lines(&mut registry);
        self.register_files(&mut registry);
        if let Some(sender) = &self.sender {
            register_sender(&mut registry, sender);
        }
        let key_ready = Gauge::<i64>::default();
        key_ready.set(i64::from(!self.key_missing.load(Ordering::Relaxed)));
        registry.register(
            "secret_key_ready",
            "1 once the secret key is known",
            key_ready,
        );
        registry.register(
            "reloads",
            "Reloads (SIGHUP) applied",
            counter(self.reloads.load(Ordering::Relaxed)),
        );
        registry.register(
            "reloads_failed",
            "Reloads refused: the configuration did not load, the old one stays",
            counter(self.reloads_failed.load(Ordering::Relaxed)),
        );
        let info = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        registry.register("build", "The agent's version", info);
        let mut text = String::new();
        if encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }

    fn register_lines(&self, registry: &mut Registry) {
        let c = &self.lines;
        let lines = [
            ("lines_read", "Lines read from the logs", &c.lines_read),
            ("lines_parsed", "Lines turned into events", &c.events),
            (
                "metrics_field_invalid",
                "Events sent without their invalid custom metrics",
                &c.metrics_invalid,
            ),
            (
                "lines_truncated",
                "Lines cut at max_line_bytes",
                &c.lines_truncated,
            ),
            ("lines_blank", "Blank lines", &c.lines_blank),
            (
                "lines_unrecognised",
                "Lines of files whose format is not known, skipped",
                &c.lines_unrecognised,
            ),
        ];
        for (name, help, value) in lines {
            registry.register(name, help, counter(Counters::get(value)));
        }
        let failed = Family::<Vec<(String, String)>, Counter>::default();
        for reason in FailReason::ALL {
            failed
                .get_or_create(&vec![("reason".into(), reason.label().into())])
                .inc_by(Counters::get(&c.failed_by_reason[reason as usize]));
        }
        registry.register(
            "lines_failed",
            "Lines that gave no event, by reason",
            failed,
        );
    }

    fn register_files(&self, registry: &mut Registry) {
        let j = &self.journal;
        for (name, help, value) in [
            (
                "journal_entries_read",
                "Journal entries read (of the selected units and programs)",
                &j.entries,
            ),
            (
                "journal_cursors_lost",
                "Saved journal positions found vacuumed away at start",
                &j.cursors_lost,
            ),
            (
                "journal_reader_restarts",
                "Times journalctl ended and was started again",
                &j.restarts,
            ),
        ] {
            registry.register(name, help, counter(value.load(Ordering::Relaxed)));
        }
        let t = &self.tail;
        registry.register(
            "files_watched",
            "Files open (live, and rotated ones being finished)",
            gauge(t.files_open.load(Ordering::Relaxed)),
        );
        registry.register(
            "rotations",
            "Rotations and truncations seen",
            counter(t.rotations.load(Ordering::Relaxed)),
        );
        registry.register(
            "checkpoint_writes",
            "Checkpoint store writes",
            counter(t.checkpoint_writes.load(Ordering::Relaxed)),
        );
        registry.register(
            "checkpoint_entries",
            "Files the checkpoint store remembers",
            gauge(t.checkpoint_entries.load(Ordering::Relaxed)),
        );
        registry.register(
            "bytes_read",
            "Bytes read from the logs",
            counter(t.bytes_read.load(Ordering::Relaxed)),
        );
        registry.register(
            "files_unreadable",
            "Watched files the agent may not read",
            gauge(t.unreadable.load(Ordering::Relaxed)),
        );
        let lag = Family::<Vec<(String, String)>, Gauge>::default();
        if let Ok(files) = t.lag.lock() {
            for (path, bytes) in files.iter() {
                lag.get_or_create(&vec![("path".into(), path.display().to_string())])
                    .set(*bytes as i64);
            }
        }
        registry.register(
            "file_lag_bytes",
            "Bytes written to a file and not yet delivered",
            lag,
        );
    }
}

fn register_sender(registry: &mut Registry, s: &SenderStats) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let counters = [
        (
            "events_sent",
            "Events written to the backend, resends included",
            get(&s.events_sent),
        ),
        (
            "events_acked",
            "Events the backend acknowledged",
            get(&s.events_acked),
        ),
        (
            "events_resent",
            "Events written again after a reconnection",
            get(&s.events_resent),
        ),
        (
            "batches_sent",
            "Messages written to the backend",
            get(&s.messages_sent),
        ),
        (
            "bytes_sent",
            "Bytes of messages written to the backend, before compression",
            get(&s.bytes_sent),
        ),
        (
            "wire_bytes_sent",
            "Bytes written to the backend's socket: after compression, with WebSocket and TLS framing",
            get(&s.wire_bytes_sent),
        ),
        (
            "reconnects",
            "Connections made after the first",
            get(&s.reconnects),
        ),
        (
            "backend_errors",
            "Connections that failed or ended in error",
            get(&s.backend_errors),
        ),
        (
            "messages_refused",
            "Connections that ended with a message in flight, counted against it (it is then sent alone, split, or set aside)",
            get(&s.messages_refused),
        ),
        (
            "backend_closes_too_big",
            "Connections the backend closed with 1009, message too big",
            get(&s.closes_too_big),
        ),
        (
            "events_dead_lettered",
            "Events the backend refused on their own, written to the dead-letter file and acknowledged",
            get(&s.events_dead_lettered),
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, counter(value));
    }
    registry.register(
        "backend_connected",
        "1 while connected to the backend",
        gauge(u64::from(s.connected.load(Ordering::Relaxed))),
    );
    registry.register(
        "in_flight_events",
        "Events handed to the sender and not acknowledged",
        gauge(get(&s.in_flight_events)),
    );
    let oldest = get(&s.oldest_unacked_ms);
    let age = if oldest == 0 {
        0.0
    } else {
        now_ms().saturating_sub(oldest) as f64 / 1000.0
    };
    let oldest_gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    oldest_gauge.set(age);
    registry.register(
        "oldest_unacked_seconds",
        "Age of the oldest event not acknowledged",
        oldest_gauge,
    );
    registry.register(
        "delivery_latency_seconds",
        "From a batch's first event to its acknowledgement",
        s.delivery_latency.clone(),
    );
    registry.register("batch_events", "Events per batch", s.batch_events.clone());
}

/// The two text formats of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposition {
    /// OpenMetrics 1.0 (what `prometheus-client` writes).
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Prometheus,
}

impl Exposition {
    /// The format a scraper's `Accept` header asks for: OpenMetrics only
    /// when it names it (Prometheus does, preferring it).
    pub(crate) fn for_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// `openmetrics` (an OpenMetrics exposition) in this format.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Exposition::OpenMetrics => openmetrics,
            Exposition::Prometheus => to_prometheus_text(&openmetrics),
        }
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition. Samples
/// are the same; the metadata differs: a counter's HELP and TYPE name its
/// sample (`…_total`), an info metric is a gauge named `…_info`, and there
/// is no `# UNIT` and no `# EOF`.
fn to_prometheus_text(openmetrics: &str) -> String {
    use std::collections::HashMap;
    // The renamed families, from their TYPE lines (which follow HELP).
    let mut renamed: HashMap<&str, (String, &str)> = HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            match kind {
                "counter" => renamed.insert(name, (format!("{name}_total"), "counter")),
                "info" => renamed.insert(name, (format!("{name}_info"), "gauge")),
                _ => None,
            };
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((new_name, new_kind)) = renamed.get(name) {
                let tail = if prefix == "# TYPE " { *new_kind } else { tail };
                let _ = writeln!(out, "{prefix}{new_name} {tail}");
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The samples of an exposition, `name{labels}` → value (for `status`,
/// and for whoever reads `/metrics` back).
pub fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(value as i64);
    g
}

/// Status, content type and body for a request path.
fn answer(
    url: &str,
    telemetry: &Telemetry,
    grace: Duration,
    format: Exposition,
) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    match url.split('?').next().unwrap_or(url) {
        "/metrics" => (
            200,
            format.content_type(),
            format.render(telemetry.exposition()),
        ),
        "/health" => match telemetry.health(grace) {
            Health::Ok => (200, JSON, "{\"status\":\"ok\"}".into()),
            Health::Failing(why) => {
                let mut body = String::from("{\"status\":\"failing\",\"reason\":");
                let _ = write!(body, "{}", serde_json::Value::String(why));
                body.push('}');
                (503, JSON, body)
            }
        },
        "/ready" if telemetry.ready() => (200, JSON, "{\"ready\":true}".into()),
        "/ready" => (503, JSON, "{\"ready\":false}".into()),
        _ => (
            404,
            "text/plain",
            "not found: /metrics, /health, /ready\n".into(),
        ),
    }
}
