//! Peer identities: the client-certificate check that enforces `allow-san` patterns.
//!
//! The patterns themselves ([`SanPattern`]: a DNS name or URI, `*` for one whole label or path
//! segment) live in `gembok_certwatch::san`, so the injector validates annotations with exactly
//! the parser the proxy uses; they are re-exported here for the proxy's own modules.
//!
//! The check runs inside the TLS handshake (a [`ClientCertVerifier`] wrapping the WebPKI one), so
//! a refused client gets a proper `access_denied` alert instead of a connection that opens and
//! then drops.

use std::sync::Arc;

use gembok_certwatch::LeafInfo;
pub use gembok_certwatch::san::{PatternError, SanPattern};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The best short name for a peer in logs: its first URI SAN (SPIFFE ID), else first DNS SAN.
pub fn peer_id(leaf: &LeafInfo) -> Option<&str> {
    leaf.uris
        .first()
        .or_else(|| leaf.dns_names.first())
        .map(String::as_str)
}

/// Wraps a client-certificate verifier: after the chain verifies, the leaf must match one of
/// the allowed patterns.
#[derive(Debug)]
pub struct SanPolicyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Arc<[SanPattern]>,
}

impl SanPolicyVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Arc<[SanPattern]>) -> Self {
        Self { inner, allowed }
    }
}

impl ClientCertVerifier for SanPolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let leaf = LeafInfo::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.allowed.iter().any(|p| p.matches(&leaf)) {
            Ok(verified)
        } else {
            // Who was refused, beside the handshake's own failure line (reason san_not_allowed).
            tracing::info!(
                dns_names = ?leaf.dns_names,
                uris = ?leaf.uris,
                patterns = self.allowed.len(),
                "client certificate has no SAN in the allow list"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn leaf(dns: &[&str], uris: &[&str]) -> LeafInfo {
        LeafInfo {
            serial: "01".into(),
            subject: String::new(),
            common_name: None,
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn peer_id_prefers_the_spiffe_id() {
        assert_eq!(
            peer_id(&leaf(&["a.b"], &["spiffe://x/y"])),
            Some("spiffe://x/y")
        );
        assert_eq!(peer_id(&leaf(&["a.b"], &[])), Some("a.b"));
        assert_eq!(peer_id(&leaf(&[], &[])), None);
    }
}
