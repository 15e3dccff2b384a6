//! Why a connection to the backend failed or ended, in words an operator
//! can act on. Every variant is retried (reconnect with backoff); none holds
//! the token or the secret key.

use tokio_tungstenite::tungstenite;

/// A connection attempt failed, or a connection ended before its work was
/// done.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("bad ws_url: {0}")]
    BadUrl(tungstenite::Error),
    #[error("the token holds characters not allowed in an HTTP header")]
    BadToken,
    #[error("no answer within {0} ms")]
    ConnectTimeout(u128),
    #[error("the backend refused the WebSocket handshake with HTTP {0}")]
    HandshakeRefused(u16),
    #[error("{0} (is the backend's certificate trusted? see tls_ca_file)")]
    Certificate(tungstenite::Error),
    #[error("{0}")]
    WebSocket(tungstenite::Error),
    #[error("the backend closed the connection{0}")]
    Closed(String),
    #[error("acknowledgement for batch {got} while batch {expected} is the oldest in flight")]
    AckOutOfOrder { got: u64, expected: u64 },
    #[error("the backend refused batch {seq}: {message}")]
    BatchRefused { seq: String, message: String },
    #[error("no acknowledgement for message {seq} within {ms} ms")]
    AckTimeout { seq: u64, ms: u128 },
    #[error("no sign of life from the backend for {0} s")]
    Silent(u64),
}

impl From<tungstenite::Error> for SendError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::Http(resp) => SendError::HandshakeRefused(resp.status().as_u16()),
            e if is_certificate_problem(&e) => SendError::Certificate(e),
            e => SendError::WebSocket(e),
        }
    }
}

/// Whether the TLS handshake failed on the backend's certificate. rustls
/// reports it as its own error, which reaches us either as tungstenite's TLS
/// error or inside an I/O error from the TLS stream.
fn is_certificate_problem(e: &tungstenite::Error) -> bool {
    let rustls_error = match e {
        tungstenite::Error::Tls(tungstenite::error::TlsError::Rustls(r)) => Some(&**r),
        tungstenite::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    matches!(
        rustls_error,
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_)
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_point_at_tls_ca_file() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = SendError::from(tungstenite::Error::Io(io));
        assert!(matches!(e, SendError::Certificate(_)));
        assert!(e.to_string().contains("tls_ca_file"), "{e}");

        let plain = SendError::from(tungstenite::Error::Io(std::io::Error::other("reset")));
        assert!(!plain.to_string().contains("tls_ca_file"));
    }
}
