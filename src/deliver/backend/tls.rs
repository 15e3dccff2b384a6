//! TLS for `wss://`: rustls with the system's trust roots, plus an optional
//! extra CA file (PEM), certificate verification on unless explicitly
//! turned off.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The rustls client configuration for the backend.
pub(crate) fn client_config(
    extra_ca: Option<&Path>,
    verify: bool,
) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS set-up: {e}"))?;
    if !verify {
        return Ok(Arc::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth(),
        ));
    }
    let mut roots = RootCertStore::empty();
    let (system, extra) = trust_anchors(extra_ca)?;
    for cert in system {
        // A system certificate rustls cannot use is skipped, not fatal.
        let _ = roots.add(cert);
    }
    for cert in extra {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("CA file: {e}"))?;
    }
    if roots.is_empty() {
        anyhow::bail!("no trusted CA certificates: the system has none and no tls_ca_file is set");
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// The certificates the backend is trusted by: the system's, and those of
/// `tls_ca_file` (which must hold at least one). The WebSocket and the key
/// fetch trust the same.
pub(crate) fn trust_anchors(
    extra_ca: Option<&Path>,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>)> {
    let system = rustls_native_certs::load_native_certs().certs;
    let mut extra = Vec::new();
    if let Some(path) = extra_ca {
        extra = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect())
            .map_err(|e| anyhow::anyhow!("reading CA file {}: {e}", path.display()))?;
        if extra.is_empty() {
            anyhow::bail!("CA file {} holds no PEM certificate", path.display());
        }
    }
    Ok((system, extra))
}

/// Accepts any certificate: for `tls_verify = false` only.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
