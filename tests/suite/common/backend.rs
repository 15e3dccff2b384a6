//! A WebSocket backend for tests, on 127.0.0.1: speaks the batch exchange
//! or the middleware's single exchange, and misbehaves on request (no
//! acknowledgements, late acknowledgements, closing mid-batch, refusing,
//! going away and coming back on the same port).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// How the backend behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// One event per message, any reply acknowledges (the middleware's).
    pub single: bool,
    /// Never acknowledge.
    pub silent: bool,
    /// Delay the acknowledgement of the very first message.
    pub first_ack_delay: Option<Duration>,
    /// Delay every acknowledgement (a slow backend).
    pub ack_delay: Option<Duration>,
    /// Close the connection, without acknowledging, when this many messages
    /// in all have arrived.
    pub close_at_message: Option<usize>,
    /// Refuse the first N batches with an error reply.
    pub refuse_first: usize,
    /// After acknowledging this many messages in all, go away for good:
    /// drop the connection and stop listening.
    pub gone_after_message: Option<usize>,
}

/// What the backend saw, shared with the test.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every event received (repeats included), in arrival order.
    pub events: Mutex<Vec<Value>>,
    /// event_ids of events acknowledged.
    pub acked: Mutex<HashSet<String>>,
    pub messages: AtomicUsize,
    pub connections: AtomicUsize,
    /// Handshake headers of each connection (lower-case names).
    pub handshakes: Mutex<Vec<HashMap<String, String>>>,
    pub behaviour: Mutex<Behaviour>,
    refused: AtomicUsize,
    delayed_once: AtomicUsize,
    /// Set by a connection for [`Behaviour::gone_after_message`]: the
    /// listener stops.
    gone: tokio::sync::Notify,
}

impl Seen {
    pub fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Seen {
            behaviour: Mutex::new(behaviour),
            ..Seen::default()
        })
    }

    pub fn event_count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// How often each event_id arrived.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for e in self.events.lock().unwrap().iter() {
            *m.entry(e["event_id"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        m
    }
}

/// A running backend; stops (dropping every connection) when dropped.
pub struct Backend {
    pub port: u16,
    pub seen: Arc<Seen>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// Starts on `port` (0: any free port), plain or with TLS.
    pub fn start(port: u16, seen: Arc<Seen>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("test backend cannot listen on 127.0.0.1:{port}: {e}"));
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let thread_seen = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                let mut stop = stop_rx.clone();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let _ = tcp.set_nodelay(true);
                            let seen = thread_seen.clone();
                            let tls = tls.clone();
                            let mut stop = stop_rx.clone();
                            tokio::spawn(async move {
                                tokio::select! {
                                    _ = serve(tcp, tls, seen) => {}
                                    _ = stop.changed() => {}
                                }
                            });
                        }
                        _ = stop.changed() => break,
                        () = thread_seen.gone.notified() => break,
                    }
                }
            });
        });
        Backend {
            port,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/ingest", self.port)
    }

    /// Stops listening and drops every connection, abruptly.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    seen: Arc<Seen>,
) {
    match tls {
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            if let Ok(stream) = acceptor.accept(tcp).await {
                serve_ws(stream, seen).await;
            }
        }
        None => serve_ws(tcp, seen).await,
    }
}

#[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
async fn serve_ws<S>(stream: S, seen: Arc<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let headers_seen = seen.clone();
    let callback = move |req: &Request, resp: Response| {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        headers_seen.handshakes.lock().unwrap().push(headers);
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    seen.connections.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let behaviour = seen.behaviour.lock().unwrap().clone();
        let n = seen.messages.fetch_add(1, Ordering::SeqCst) + 1;
        // Message numbers only grow: each setting closes at most once.
        if behaviour.close_at_message == Some(n) {
            return; // dropped mid-batch, unacknowledged
        }
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let (events, reply) = if behaviour.single {
            (vec![value], r#"{"status":"ok"}"#.to_owned())
        } else {
            let seq = value["seq"].as_u64().unwrap_or(0);
            if seen.refused.load(Ordering::SeqCst) < behaviour.refuse_first {
                seen.refused.fetch_add(1, Ordering::SeqCst);
                let _ = ws
                    .send(Message::text(format!(
                        // With a forged log line after a line break: the
                        // agent's text log must keep it on the real line.
                        r#"{{"type":"error","seq":{seq},"message":"storage full\n ERROR forged by the backend"}}"#
                    )))
                    .await;
                continue;
            }
            let events = value["events"].as_array().cloned().unwrap_or_default();
            (events, format!(r#"{{"type":"ack","seq":{seq}}}"#))
        };
        let ids: Vec<String> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        seen.events.lock().unwrap().extend(events);
        if behaviour.silent {
            continue;
        }
        if let Some(d) = behaviour.first_ack_delay
            && seen.delayed_once.fetch_add(1, Ordering::SeqCst) == 0
        {
            tokio::time::sleep(d).await;
        }
        if let Some(d) = behaviour.ack_delay {
            tokio::time::sleep(d).await;
        }
        // Recorded as acknowledged before the reply leaves, so that a
        // checkpoint can never be seen ahead of this set.
        seen.acked.lock().unwrap().extend(ids);
        if ws.send(Message::text(reply)).await.is_err() {
            return;
        }
        if behaviour.gone_after_message == Some(n) {
            seen.gone.notify_one();
            return;
        }
    }
}

/// A CA and a server certificate for 127.0.0.1, made now.
pub struct TestPki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}
