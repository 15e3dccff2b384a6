//! The sender thread: delivers batches over a WebSocket that reconnects by
//! itself.
//!
//! [`Sender`] is the agent's handle on a thread running a small tokio
//! runtime. The agent's loop offers it closed [`Batch`]es through a bounded
//! queue (when the queue is full the agent stops reading: the log file is
//! the buffer, not memory). The thread keeps a window of messages in flight
//! on one [`Connection`], matches acknowledgements in order, and hands the
//! acknowledged events' origins back, waking the agent's loop, which moves
//! the checkpoints. A missing acknowledgement, a silent peer, an error
//! reply or a closed connection means: reconnect with exponential backoff
//! and jitter, and send again everything not acknowledged (at least once;
//! `event_id` lets the backend drop repeats).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::mpsc;

use super::batch::Batch;
use super::connection::Connection;
use super::outbox::{Outbox, RefusalPolicy};
use super::stats::SenderStats;
use super::wire::Wire;
use crate::deliver::AckPoint;
use crate::secret::Secret;
use crate::wake::{Wake, Waker};

/// How the sender talks to the backend.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub url: String,
    pub token: Option<Secret>,
    pub client_id: Option<String>,
    pub wire: Wire,
    /// Messages in flight before waiting for acknowledgements.
    pub window: usize,
    /// A message not acknowledged within this means reconnect and resend.
    pub ack_timeout: Duration,
    /// Keep-alive ping period; a peer silent for three periods is dead.
    pub ping_interval: Duration,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// For `wss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// permessage-deflate offered with these settings; `None`: off.
    pub compression: Option<super::compression::DeflateSettings>,
    /// What to do with a message the backend will not take.
    pub refusals: RefusalPolicy,
}

impl SenderConfig {
    /// The URL without user info or query, safe for messages (a token in
    /// the query string must not reach the log).
    pub(crate) fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `scheme://host[:port]/path` of a URL.
pub(crate) fn redact_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
            format!("{scheme}://{rest}")
        }
        None => no_query.to_owned(),
    }
}

/// The agent's side of the sender.
pub struct Sender {
    queue: Option<mpsc::Sender<Batch>>,
    acks: std_mpsc::Receiver<Vec<AckPoint>>,
    thread: Option<JoinHandle<()>>,
    /// Ends the thread at once, delivered or not (see [`Sender::abort`]).
    abort: Arc<tokio::sync::Notify>,
    /// Set by the thread as its very last act, after its runtime is gone.
    done: Arc<AtomicBool>,
}

/// Closed batches the queue holds at most (beyond those in flight).
const QUEUE_BATCHES: usize = 2;

impl Sender {
    /// Starts the sender thread; it wakes the agent's loop through `waker`
    /// when acknowledgements arrive or the queue has room.
    pub fn spawn(
        config: SenderConfig,
        waker: Waker,
        stats: Arc<SenderStats>,
    ) -> std::io::Result<Self> {
        let (queue_tx, queue_rx) = mpsc::channel(QUEUE_BATCHES);
        let (ack_tx, ack_rx) = std_mpsc::channel();
        let abort = Arc::new(tokio::sync::Notify::new());
        let aborted = abort.clone();
        let done = Arc::new(AtomicBool::new(false));
        let thread_done = done.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("sender".into())
            .spawn(move || {
                let finished = waker.clone();
                let policy = config.refusals.clone();
                let outbox = Outbox::new(queue_rx, ack_tx, waker, stats.clone(), policy);
                runtime.block_on(async {
                    tokio::select! {
                        () = run(config, outbox) => {}
                        () = aborted.notified() => {
                            use Ordering::Relaxed;
                            // What was in flight is given up: the agent
                            // reads it again for the next sender.
                            stats.connected.store(false, Relaxed);
                            stats.in_flight_events.store(0, Relaxed);
                            stats.oldest_unacked_ms.store(0, Relaxed);
                        }
                    }
                });
                // Shut the runtime down before saying so: the agent's drain
                // asks whether the thread is finished as soon as it wakes,
                // and a "not yet" would cost it a whole wait period.
                drop(runtime);
                thread_done.store(true, Ordering::Release);
                // The agent may be waiting for exactly this (draining at exit).
                finished.wake(Wake::Space);
            })?;
        Ok(Sender {
            queue: Some(queue_tx),
            acks: ack_rx,
            thread: Some(thread),
            abort,
            done,
        })
    }

    /// Offers a batch; gives it back when the queue is full.
    pub(crate) fn offer(&mut self, batch: Batch) -> Result<(), Batch> {
        let Some(q) = &self.queue else {
            return Err(batch);
        };
        q.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
        })
    }

    /// Origins of events acknowledged since the last call.
    pub fn take_acks(&self, out: &mut Vec<AckPoint>) {
        for origins in self.acks.try_iter() {
            out.extend(origins);
        }
    }

    /// No more batches: the sender delivers what it has, then stops.
    pub fn close(&mut self) {
        self.queue = None;
    }

    /// Stops at once, dropping what is not acknowledged: for a reload that
    /// replaces the backend, after which those lines are read again from
    /// their checkpoints. (Closing instead would keep delivering them to
    /// the old backend, and the new one would get them as well.)
    pub(crate) fn abort(&mut self) {
        self.queue = None;
        self.abort.notify_one();
    }

    /// Whether the sender thread has finished (everything acknowledged
    /// after [`Sender::close`]).
    pub fn is_finished(&self) -> bool {
        // The thread's own end too: a thread that panicked never set `done`.
        self.done.load(Ordering::Acquire) || self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.queue = None;
        if self.is_finished()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

/// Connects, delivers, reconnects, until the agent closed the queue and
/// everything is acknowledged.
async fn run(config: SenderConfig, mut outbox: Outbox) {
    let url = config.display_url();
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(config.backoff_min)
            .with_max_delay(config.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    let mut failures: u64 = 0;
    let mut connects: u64 = 0;
    // With nothing to send and the agent gone, do not connect at all.
    while !outbox.is_done() {
        let mut connection = match Connection::open(&config, &outbox.stats).await {
            Ok(c) => c,
            Err(e) => {
                outbox.stats.failed();
                failures += 1;
                let delay = delays.next().unwrap_or(config.backoff_max);
                // Every failure while few, then one in ten: a backend away
                // for hours must not flood the journal.
                if failures <= 5 || failures.is_multiple_of(10) {
                    tracing::warn!(
                        "cannot connect to {url}: {e}; retrying in {} ms (attempt {failures})",
                        delay.as_millis()
                    );
                }
                pause(&mut outbox, delay, config.wire).await;
                continue;
            }
        };
        connects += 1;
        let stats = &outbox.stats;
        // A connection proves the backend works only when nothing waits for
        // it: one that accepts connections and refuses every batch fails
        // on, however often it is reconnected (only acknowledgements clear
        // it then).
        if outbox.unacknowledged() == 0 {
            stats.working();
        }
        stats
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        stats
            .ever_connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if connects > 1 {
            SenderStats::add(&stats.reconnects, 1);
        }
        let how = match (config.compression, connection.compressed) {
            (None, _) => "",
            (Some(_), true) => " (compressed: permessage-deflate)",
            (Some(_), false) => " (uncompressed: the backend declined permessage-deflate)",
        };
        if connects > 1 || failures > 0 {
            tracing::info!(
                "connected to {url}{how}; sending {} unacknowledged messages again",
                outbox.unacknowledged()
            );
        } else {
            tracing::info!("connected to {url}{how}");
        }
        failures = 0;
        let acked = |o: &Outbox| {
            o.stats
                .events_acked
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let acked_before = acked(&outbox);
        let delivered = connection.deliver(&mut outbox).await;
        outbox
            .stats
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let Err(why) = delivered else {
            return;
        };
        let in_flight = connection.in_flight_sizes();
        drop(connection);
        outbox.stats.failed();
        let narrowed = outbox.connection_ended(&why, &in_flight);
        if narrowed || acked(&outbox) > acked_before {
            // The connection worked for a while, or a refused message was
            // cut down to try again: start backing off from the beginning.
            delays = backoff();
        }
        let delay = delays.next().unwrap_or(config.backoff_max);
        tracing::warn!(
            "connection to {url} lost: {why}; reconnecting in {} ms",
            delay.as_millis()
        );
        pause(&mut outbox, delay, config.wire).await;
    }
}

/// Waits `delay` before the next connection attempt. While nothing waits
/// for an acknowledgement, it watches the queue meanwhile: batches handed
/// over are taken (and sent once connected), and an agent closing the
/// queue ends the wait, so that the sender stops now. Only a connection
/// looks at the queue otherwise, and one to a backend gone for good (it
/// acknowledged the last batch and went away) is never made: a `--once`
/// run waited for ever, a stop for its whole `shutdown_timeout`.
async fn pause(outbox: &mut Outbox, delay: Duration, wire: Wire) {
    let until = tokio::time::Instant::now() + delay;
    while outbox.unacknowledged() == 0 && !outbox.closed {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            batch = outbox.queue.recv() => match batch {
                Some(b) => outbox.take(b, wire),
                None => outbox.closed = true,
            },
        }
    }
    if !outbox.is_done() {
        tokio::time::sleep_until(until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_lose_credentials_and_query() {
        assert_eq!(
            redact_url("wss://user:pw@h.example:443/ws?token=abc"),
            "wss://h.example:443/ws"
        );
        assert_eq!(redact_url("ws://127.0.0.1:9/x"), "ws://127.0.0.1:9/x");
    }
}
