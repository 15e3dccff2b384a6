//! The one-line status logged every `status_interval_s` (lines per second,
//! events acknowledged, failures since the last line, lag, backend state),
//! and the progress bar of a `--once` backfill on a terminal.

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
    pub(crate) fn log_if_due(&mut self, telemetry: &Telemetry) {
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

/// The progress bar of a `--once` run, on a terminal only.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
    /// Bytes read before the run (the counter is shared).
    start: u64,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl Progress {
    /// A bar over `total` bytes (what the sources hold and have not
    /// delivered), when stderr is a terminal.
    pub fn new(total: u64, telemetry: &Telemetry) -> Option<Self> {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return None;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
        ) {
            bar.set_style(style);
        }
        Some(Progress {
            bar,
            start: telemetry.tail.bytes_read.load(Ordering::Relaxed),
        })
    }

    pub(crate) fn update(&self, telemetry: &Telemetry) {
        let read = telemetry.tail.bytes_read.load(Ordering::Relaxed);
        self.bar.set_position(read.saturating_sub(self.start));
        let per_s = self.bar.per_sec();
        let bytes_per_line = telemetry.tail.bytes_read.load(Ordering::Relaxed) as f64
            / (Counters::get(&telemetry.lines.lines_read).max(1)) as f64;
        self.bar
            .set_message(format!("{:.0} lines/s", per_s / bytes_per_line.max(1.0)));
    }

    pub fn finish(self, telemetry: &Telemetry) {
        self.update(telemetry);
        self.bar.finish_and_clear();
    }
}
