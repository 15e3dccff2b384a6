//! The one-line status logged every `status_interval_s`: lines per second,
//! events acknowledged, failures since the last line, lag, backend state.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::diagnostics::Counters;
use crate::metrics::Telemetry;

/// When the next status line is due, and the figures at the last one.
#[derive(Debug)]
pub struct Status {
    every: Option<Duration>,
    last: Instant,
    lines: u64,
    failed: u64,
}

impl Status {
    pub fn new(every: Option<Duration>, telemetry: &Telemetry) -> Self {
        Status {
            every,
            last: Instant::now(),
            lines: Counters::get(&telemetry.lines.lines_read),
            failed: Counters::get(&telemetry.lines.lines_failed),
        }
    }

    /// When the next line is due, if status lines are on.
    pub fn due(&self) -> Option<Instant> {
        self.every.map(|e| self.last + e)
    }

    /// Logs the status line if it is due.
    pub fn log_if_due(&mut self, telemetry: &Telemetry) {
        if self.due().is_none_or(|t| Instant::now() < t) {
            return;
        }
        let elapsed = self.last.elapsed().as_secs_f64().max(0.001);
        let lines = Counters::get(&telemetry.lines.lines_read);
        let failed = Counters::get(&telemetry.lines.lines_failed);
        let lag: u64 = telemetry
            .tail
            .lag
            .lock()
            .map(|l| l.iter().map(|(_, b)| b).sum())
            .unwrap_or(0);
        let backend = match &telemetry.sender {
            None => "standard output".to_owned(),
            Some(s) => format!(
                "backend {}, {} events acknowledged, {} in flight",
                if s.connected.load(Ordering::Relaxed) {
                    "connected"
                } else {
                    "not connected"
                },
                s.events_acked.load(Ordering::Relaxed),
                s.in_flight_events.load(Ordering::Relaxed)
            ),
        };
        tracing::info!(
            "status: {:.0} lines/s, {} failed since the last status, {lag} bytes not yet delivered, {backend}",
            (lines - self.lines) as f64 / elapsed,
            failed - self.failed
        );
        self.last = Instant::now();
        self.lines = lines;
        self.failed = failed;
    }
}
