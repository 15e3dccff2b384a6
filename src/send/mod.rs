//! Send: deliver batches over a WebSocket that reconnects by itself.
//!
//! [`Sender`] runs on its own thread with a small tokio runtime. The agent's
//! loop offers it closed [`Batch`]es through a bounded queue (when the queue
//! is full the agent stops reading: the log file is the buffer, not memory).
//! The sender keeps a window of messages in flight, matches
//! acknowledgements in order, and reports the acknowledged events' origins
//! back, waking the agent's loop, which moves the checkpoints. A missing
//! acknowledgement, a silent peer, an error reply or a closed connection
//! means: reconnect with exponential backoff and jitter, and send again
//! everything not acknowledged (at least once; `event_id` lets the backend
//! drop repeats).

pub mod tls;
pub mod wire;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::batch::{Batch, Origin};
use crate::config::Secret;
use crate::tail::watch::Wake;
use wire::{Reply, Unit, Wire};

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
}

impl SenderConfig {
    /// The URL without user info or query, safe for messages (a token in
    /// the query string must not reach the log).
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `scheme://host[:port]/path` of a URL.
pub fn redact_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
            format!("{scheme}://{rest}")
        }
        None => no_query.to_owned(),
    }
}

/// Counters the sender keeps (for logs now, metrics later).
#[derive(Debug, Default)]
pub struct SenderStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub messages_sent: AtomicU64,
    pub events_acked: AtomicU64,
    pub resends: AtomicU64,
}

/// Wakes the agent's loop at most once until it looks: a wake-up per
/// acknowledged message would cost more than the message in `single`.
#[derive(Debug, Clone)]
struct Waker {
    tx: std_mpsc::Sender<Wake>,
    pending: Arc<AtomicBool>,
}

impl Waker {
    fn wake(&self, why: Wake) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(why);
        }
    }
}

/// The agent's side of the sender.
pub struct Sender {
    queue: Option<mpsc::Sender<Batch>>,
    woken: Arc<AtomicBool>,
    acks: std_mpsc::Receiver<Vec<Origin>>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<SenderStats>,
}

/// Closed batches the queue holds at most (beyond those in flight).
const QUEUE_BATCHES: usize = 2;

impl Sender {
    /// Starts the sender thread; `wake` is the agent loop's wake-up channel.
    pub fn spawn(config: SenderConfig, wake: std_mpsc::Sender<Wake>) -> std::io::Result<Self> {
        let (queue_tx, queue_rx) = mpsc::channel(QUEUE_BATCHES);
        let (ack_tx, ack_rx) = std_mpsc::channel();
        let stats = Arc::new(SenderStats::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_stats = stats.clone();
        let woken = Arc::new(AtomicBool::new(false));
        let wake = Waker {
            tx: wake,
            pending: woken.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sender".into())
            .spawn(move || {
                let finished = wake.tx.clone();
                runtime.block_on(run(config, queue_rx, ack_tx, wake, thread_stats));
                // The agent may be waiting for exactly this (draining at exit).
                let _ = finished.send(Wake::Acked);
            })?;
        Ok(Sender {
            queue: Some(queue_tx),
            woken,
            acks: ack_rx,
            thread: Some(thread),
            stats,
        })
    }

    /// Offers a batch; gives it back when the queue is full.
    pub fn offer(&mut self, batch: Batch) -> Result<(), Batch> {
        let Some(q) = &self.queue else {
            return Err(batch);
        };
        q.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
        })
    }

    /// Origins of events acknowledged since the last call.
    pub fn take_acks(&self, out: &mut Vec<Origin>) {
        // Cleared before draining: whatever arrives later wakes again.
        self.woken.store(false, Ordering::Release);
        for origins in self.acks.try_iter() {
            out.extend(origins);
        }
    }

    /// Lets the sender wake the agent again (it wakes once until then).
    pub fn rearm(&self) {
        self.woken.store(false, Ordering::Release);
    }

    /// No more batches: the sender delivers what it has, then stops.
    pub fn close(&mut self) {
        self.queue = None;
    }

    /// Whether the sender thread has finished (everything acknowledged
    /// after [`Sender::close`]).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take()
            && t.is_finished()
        {
            let _ = t.join();
        }
    }
}

/// Why a connection ended.
enum End {
    /// Closed and everything acknowledged: the sender is done.
    Done,
    /// Reconnect after a pause.
    Retry(String),
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(
    config: SenderConfig,
    mut queue: mpsc::Receiver<Batch>,
    acks: std_mpsc::Sender<Vec<Origin>>,
    wake: Waker,
    stats: Arc<SenderStats>,
) {
    let url = config.display_url();
    let mut pending: VecDeque<Unit> = VecDeque::new();
    let mut closed = false;
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
    loop {
        // With nothing to send and the agent gone, do not connect at all.
        if closed && pending.is_empty() {
            return;
        }
        let ws = match connect(&config).await {
            Ok(ws) => ws,
            Err(e) => {
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
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        stats.connected.store(true, Ordering::Relaxed);
        stats.connects.fetch_add(1, Ordering::Relaxed);
        if failures > 0 || stats.connects.load(Ordering::Relaxed) > 1 {
            tracing::info!(
                "connected to {url}; sending {} unacknowledged messages again",
                pending.len()
            );
            stats
                .resends
                .fetch_add(pending.len() as u64, Ordering::Relaxed);
        } else {
            tracing::info!("connected to {url}");
        }
        failures = 0;
        let acked_before = stats.events_acked.load(Ordering::Relaxed);
        let end = session(
            ws,
            &config,
            &mut pending,
            &mut queue,
            &mut closed,
            &acks,
            &wake,
            &stats,
        )
        .await;
        stats.connected.store(false, Ordering::Relaxed);
        match end {
            End::Done => return,
            End::Retry(why) => {
                if stats.events_acked.load(Ordering::Relaxed) > acked_before {
                    // The connection worked for a while: start backing off
                    // from the beginning again.
                    delays = backoff();
                }
                let delay = delays.next().unwrap_or(config.backoff_max);
                tracing::warn!(
                    "connection to {url} lost: {why}; reconnecting in {} ms",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn connect(config: &SenderConfig) -> Result<Ws, String> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad ws_url: {e}"))?;
    let headers = request.headers_mut();
    if let Some(token) = &config.token {
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| "the token holds characters not allowed in an HTTP header".to_owned())?;
        headers.insert("Authorization", bearer);
        let key = HeaderValue::from_str(token.expose())
            .map_err(|_| "the token holds characters not allowed in an HTTP header".to_owned())?;
        headers.insert("X-API-Key", key);
    }
    if let Some(id) = &config.client_id
        && let Ok(v) = HeaderValue::from_str(id)
    {
        headers.insert("X-Client-Id", v);
    }
    headers.insert(
        "User-Agent",
        HeaderValue::from_static(concat!("cerberus-agent/", env!("CARGO_PKG_VERSION"))),
    );
    let connector = match &config.tls {
        Some(tls) if config.url.starts_with("wss://") => Connector::Rustls(tls.clone()),
        _ => Connector::Plain,
    };
    let ws_config = WebSocketConfig::default().max_message_size(Some(16 << 20));
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(config.connect_timeout, attempt).await {
        Err(_) => Err(format!(
            "no answer within {} ms",
            config.connect_timeout.as_millis()
        )),
        Ok(Err(e)) => Err(describe(&e)),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// A connection error in words an operator can act on.
fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    let text = match e {
        Error::Http(resp) => format!(
            "the backend refused the WebSocket handshake with HTTP {}",
            resp.status()
        ),
        other => other.to_string(),
    };
    // rustls reports certificate problems in several error variants.
    if text.contains("certificate") {
        format!("{text} (is the backend's certificate trusted? see tls_ca_file)")
    } else {
        text
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    ws: Ws,
    config: &SenderConfig,
    pending: &mut VecDeque<Unit>,
    queue: &mut mpsc::Receiver<Batch>,
    closed: &mut bool,
    acks: &std_mpsc::Sender<Vec<Origin>>,
    wake: &Waker,
    stats: &SenderStats,
) -> End {
    let (mut sink, mut stream) = ws.split();
    let mut seq: u64 = 0;
    // The first `in_flight.len()` units of `pending` are sent on this
    // connection, with their sequence numbers and when they went out.
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    loop {
        // Queue every message the window allows, then write them out with
        // one flush: one system call for many small messages.
        let mut queued = false;
        while in_flight.len() < config.window && in_flight.len() < pending.len() {
            seq += 1;
            let text = config.wire.message(&pending[in_flight.len()], seq);
            if let Err(e) = sink.feed(Message::text(text)).await {
                return End::Retry(describe(&e));
            }
            stats.messages_sent.fetch_add(1, Ordering::Relaxed);
            in_flight.push_back((seq, Instant::now()));
            queued = true;
        }
        if queued && let Err(e) = sink.flush().await {
            return End::Retry(describe(&e));
        }
        if *closed && pending.is_empty() {
            let _ = sink.send(Message::Close(None)).await;
            return End::Done;
        }
        let deadline = in_flight
            .front()
            .map(|(_, sent)| tokio::time::Instant::from_std(*sent + config.ack_timeout));
        let room = pending.len() < config.window;
        tokio::select! {
            message = stream.next() => {
                last_heard = Instant::now();
                let text = match message {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) if config.wire == Wire::Single => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| format!("code {} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                        return End::Retry(format!("the backend closed the connection {why}").trim_end().to_owned());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return End::Retry(describe(&e)),
                    None => return End::Retry("the connection closed".into()),
                };
                let acked = match config.wire {
                    // The middleware's exchange: any reply acknowledges the
                    // oldest message in flight.
                    Wire::Single => !in_flight.is_empty(),
                    Wire::Batch => match wire::parse_reply(&text) {
                        Reply::Ack(n) => match in_flight.front() {
                            Some((expected, _)) if *expected == n => true,
                            Some((expected, _)) if n < *expected => false,
                            Some((expected, _)) => return End::Retry(format!("acknowledgement for batch {n} while batch {expected} is the oldest in flight")),
                            None => false,
                        },
                        Reply::Error { seq, message } => {
                            let seq = seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
                            return End::Retry(format!("the backend refused batch {seq}: {message}"));
                        }
                        Reply::Unknown(t) => {
                            tracing::debug!("ignoring a reply that is not an acknowledgement: {t}");
                            false
                        }
                    },
                };
                if acked {
                    in_flight.pop_front();
                    if let Some(unit) = pending.pop_front() {
                        stats.events_acked.fetch_add(unit.origins.len() as u64, Ordering::Relaxed);
                        let _ = acks.send(unit.origins);
                        wake.wake(Wake::Acked);
                    }
                }
            }
            batch = queue.recv(), if !*closed && room => {
                match batch {
                    Some(b) => {
                        pending.extend(config.wire.units(b));
                        wake.wake(Wake::Space);
                    }
                    None => *closed = true,
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                let n = in_flight.front().map(|(s, _)| *s).unwrap_or_default();
                return End::Retry(format!("no acknowledgement for message {n} within {} ms", config.ack_timeout.as_millis()));
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > config.ping_interval * 3 {
                    return End::Retry(format!("no sign of life from the backend for {} s", last_heard.elapsed().as_secs()));
                }
                if let Err(e) = sink.send(Message::Ping(Bytes::new())).await {
                    return End::Retry(describe(&e));
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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
