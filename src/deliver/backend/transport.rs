//! The byte stream under the WebSocket: TCP, or TLS over TCP for `wss://`,
//! with every byte written to the socket counted, so that the metrics show
//! what the link to the backend really carries (TLS records and WebSocket
//! frames included, after compression). Writes are buffered, and a
//! [`Cork`] holds back the flush the WebSocket does after every message
//! while the sender writes a burst of them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::TcpStream;

use super::error::SendError;
use super::stats::SenderStats;

/// What the WebSocket reads and writes.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// TCP or TLS, chosen per URL.
pub(crate) type CountedStream = Box<dyn ByteStream>;

/// While set, flushes asked of the stream are skipped: a burst of messages
/// leaves in as few writes as the buffer allows, and the writer flushes
/// once at its end. (The buffer still writes through when it fills, so
/// holding never stores more than its capacity.)
#[derive(Debug, Clone, Default)]
pub(crate) struct Cork(Arc<AtomicBool>);

impl Cork {
    /// Holds flushes back until [`Cork::release`].
    pub fn hold(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Lets flushes through again; the caller flushes what is buffered.
    pub fn release(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    fn held(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Opens TCP to the URL's host and port, and TLS over it for `wss://`.
pub async fn connect(
    uri: &http::Uri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    stats: Arc<SenderStats>,
    cork: Cork,
) -> Result<CountedStream, SendError> {
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        other => {
            return Err(SendError::BadUrl(format!(
                "scheme {:?}: expected ws:// or wss://",
                other.unwrap_or("")
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| SendError::BadUrl("no host".into()))?;
    // An IPv6 literal comes in brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(SendError::Io)?;
    // Acknowledgements are small and awaited: no Nagle delay on them.
    tcp.set_nodelay(true).map_err(SendError::Io)?;
    let counted = Counted { inner: tcp, stats };
    // The WebSocket writes a frame's header and its payload separately and
    // flushes after each message: buffered, that is one system call per
    // message instead of two (what `single` sends most of).
    let Some(tls) = tls.filter(|_| secure) else {
        let buffered = BufWriter::with_capacity(WRITE_BUFFER, counted);
        return Ok(Box::new(Corked {
            inner: buffered,
            cork,
        }));
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| SendError::BadUrl(format!("{host:?} is not a valid TLS server name")))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, counted)
        .await
        .map_err(SendError::from_tls)?;
    let buffered = BufWriter::with_capacity(WRITE_BUFFER, stream);
    Ok(Box::new(Corked {
        inner: buffered,
        cork,
    }))
}

/// A stream whose flushes a [`Cork`] can hold back.
struct Corked<S> {
    inner: S,
    cork: Cork,
}

impl<S: AsyncRead + Unpin> AsyncRead for Corked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cork.held() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Messages up to this size go out in one write; larger ones bypass it.
const WRITE_BUFFER: usize = 64 << 10;

/// A socket whose written bytes are added to `wire_bytes_sent`.
struct Counted {
    inner: TcpStream,
    stats: Arc<SenderStats>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            SenderStats::add(&self.stats.wire_bytes_sent, n as u64);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            SenderStats::add(&self.stats.wire_bytes_sent, n as u64);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
