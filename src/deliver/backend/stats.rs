//! What the sender did, for the metrics and the health check: atomics the
//! sender thread updates and the metrics thread reads, and two histograms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// The sender's counters and gauges.
#[derive(Debug)]
pub struct SenderStats {
    /// Events written to the backend, resends included.
    pub events_sent: AtomicU64,
    pub events_acked: AtomicU64,
    /// Events written again after a reconnection.
    pub events_resent: AtomicU64,
    /// Messages (batches, or single events) written.
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Bytes written to the backend's socket: frames, TLS and compression
    /// included (what the link carries).
    pub wire_bytes_sent: AtomicU64,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
    /// Connections that ended with a message in flight that was then
    /// counted as refused (see `outbox`).
    pub messages_refused: AtomicU64,
    /// Closes with 1009 ("message too big").
    pub closes_too_big: AtomicU64,
    /// Events written to the dead-letter file (and acknowledged).
    pub events_dead_lettered: AtomicU64,
    /// Connections that failed or ended in error (refused, timed out,
    /// refused a batch, closed).
    pub backend_errors: AtomicU64,
    pub connected: AtomicBool,
    pub ever_connected: AtomicBool,
    /// Events handed to the sender and not acknowledged.
    pub in_flight_events: AtomicU64,
    /// When the oldest of those was handed over (ms since the epoch; 0:
    /// none).
    pub oldest_unacked_ms: AtomicU64,
    /// Since when the backend fails (ms since the epoch; 0: it does not):
    /// set at the first failure after a success, cleared by an
    /// acknowledgement (or a connection while nothing waits).
    pub failing_since_ms: AtomicU64,
    /// Seconds from a batch's first event to its acknowledgement.
    pub delivery_latency: Histogram,
    /// Events per batch closed.
    pub batch_events: Histogram,
}

impl Default for SenderStats {
    fn default() -> Self {
        SenderStats {
            events_sent: AtomicU64::new(0),
            events_acked: AtomicU64::new(0),
            events_resent: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            wire_bytes_sent: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            messages_refused: AtomicU64::new(0),
            closes_too_big: AtomicU64::new(0),
            events_dead_lettered: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            in_flight_events: AtomicU64::new(0),
            oldest_unacked_ms: AtomicU64::new(0),
            failing_since_ms: AtomicU64::new(0),
            delivery_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        }
    }
}

impl SenderStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The backend failed (a connection refused or lost, a batch refused).
    pub fn failed(&self) {
        Self::add(&self.backend_errors, 1);
        let _ = self.failing_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The backend works (connected, or acknowledged).
    pub fn working(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
