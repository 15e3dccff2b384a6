//! The metrics port's HTTP server: small, and bounded against whoever can
//! reach the port.
//!
//! One thread runs a tokio runtime; each connection is a task. At most
//! [`MAX_CONNECTIONS`] are served at once (more wait in the kernel's
//! backlog, costing the agent nothing); a request head must arrive within
//! [`READ_TIMEOUT`] and fit in [`MAX_HEAD_BYTES`] (else 408 or 431, and
//! the connection is closed); every answer closes its connection. When the
//! process runs out of file descriptors, accepting pauses and resumes once
//! some are free (said once), instead of the listener dying.
//!
//! The request head is parsed with `httparse`; what is answered is
//! [`super::answer`]'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{Exposition, Telemetry};

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// The largest request head read.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves from a thread of its own; returns the address
/// bound (a port 0 picks a free one).
pub fn serve(addr: &str, telemetry: Arc<Telemetry>, grace: Duration) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept(listener, telemetry, grace).await,
                    Err(e) => tracing::error!("metrics server: {e}"),
                }
            });
        })?;
    Ok(bound)
}

async fn accept(listener: TcpListener, telemetry: Arc<Telemetry>, grace: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut out_of_descriptors = false;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                out_of_descriptors = false;
                let telemetry = telemetry.clone();
                tokio::spawn(async move {
                    answer(stream, &telemetry, grace).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE, ENFILE: wait for descriptors, then go on.
                let no_fds = matches!(e.raw_os_error(), Some(23 | 24));
                if no_fds && !out_of_descriptors {
                    tracing::warn!(
                        "metrics server: {e}; requests wait until file descriptors are free (see LimitNOFILE)"
                    );
                } else if !no_fds {
                    tracing::debug!("metrics server: accept failed: {e}");
                }
                out_of_descriptors |= no_fds;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and answers it; any fault costs this connection
/// only.
async fn answer(mut stream: TcpStream, telemetry: &Telemetry, grace: Duration) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => simple(408, "request head not sent in time\n"),
        Ok(Err(status)) => simple(status, "bad request head\n"),
        Ok(Ok(head)) => respond(&head, telemetry, grace),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

/// What the answer depends on.
struct Head {
    method: String,
    path: String,
    accept: Option<String>,
}

/// Reads up to the blank line that ends the head; an HTTP status when it
/// is too large (431) or not HTTP (400).
async fn read_head(stream: &mut TcpStream) -> Result<Head, u16> {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                let accept = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("accept"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                return Ok(Head {
                    method: request.method.unwrap_or_default().to_owned(),
                    path: request.path.unwrap_or_default().to_owned(),
                    accept,
                });
            }
            Ok(httparse::Status::Partial) if filled < buf.len() => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(431);
            }
            Err(_) => return Err(400),
        }
    }
}

fn respond(head: &Head, telemetry: &Telemetry, grace: Duration) -> Vec<u8> {
    if head.method != "GET" && head.method != "HEAD" {
        return simple(405, "GET only\n");
    }
    let format = Exposition::for_accept(head.accept.as_deref());
    let (status, content_type, body) = super::answer(&head.path, telemetry, grace, format);
    let mut out = response(status, content_type, &body);
    if head.method == "HEAD" {
        out.truncate(out.len() - body.len());
    }
    out
}

fn simple(status: u16, body: &str) -> Vec<u8> {
    response(status, "text/plain; charset=utf-8", body)
}

fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}
