//! TLS settings: the crypto provider, and the rustls configs built from certificate material.
//!
//! One [`TlsConfigs`] holds a server config per inbound listener and a client config per
//! outbound route, all built from the same validated [`Material`]; `gembok-certwatch` publishes
//! it as one pointer, so a handshake always sees a certificate, key and CA that belong together.
//!
//! Choices: TLS 1.3 only unless `--tls12`; AEAD suites only, AES-128-GCM first (fastest on
//! AES-NI hardware), then AES-256-GCM, then ChaCha20-Poly1305; the server's order wins. Key
//! exchange keeps the provider's defaults (X25519MLKEM768 first with aws-lc-rs). A reload builds
//! fresh session caches and fresh verification caches (`verify_cache.rs`), so nothing verified
//! under an old CA bundle is reused under a new one.

use std::sync::Arc;

use gembok_certwatch::{BuildError, Material};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::{ClientAuth, Config, Provider};
use crate::identity::{SanPattern, SanPolicyVerifier};
use crate::verify_cache::{CachingClientVerifier, CachingServerVerifier};

/// What every handshake of one certificate generation uses.
#[derive(Debug)]
pub struct TlsConfigs {
    /// Indexed like `Config::inbound`.
    pub inbound: Vec<Arc<ServerConfig>>,
    /// Indexed like `Config::outbound`.
    pub outbound: Vec<Arc<ClientConfig>>,
}

/// The provider with Gembok's suite policy applied.
pub fn provider(kind: Provider, tls12: bool) -> CryptoProvider {
    let (mut provider, preferred): (CryptoProvider, Vec<SupportedCipherSuite>) = match kind {
        Provider::AwsLcRs => {
            use rustls::crypto::aws_lc_rs::cipher_suite as cs;
            (
                rustls::crypto::aws_lc_rs::default_provider(),
                vec![
                    cs::TLS13_AES_128_GCM_SHA256,
                    cs::TLS13_AES_256_GCM_SHA384,
                    cs::TLS13_CHACHA20_POLY1305_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                ],
            )
        }
        Provider::Ring => {
            use rustls::crypto::ring::cipher_suite as cs;
            (
                rustls::crypto::ring::default_provider(),
                vec![
                    cs::TLS13_AES_128_GCM_SHA256,
                    cs::TLS13_AES_256_GCM_SHA384,
                    cs::TLS13_CHACHA20_POLY1305_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                ],
            )
        }
    };
    provider.cipher_suites = preferred
        .into_iter()
        .filter(|s| tls12 || s.version() == &rustls::version::TLS13)
        .collect();
    provider
}

/// The protocol versions allowed by `--tls12`.
pub fn versions(tls12: bool) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    if tls12 { BOTH } else { TLS13_ONLY }
}

/// Builds every config for one certificate generation. Called by `gembok-certwatch` after the
/// material validated, and again on each reload.
pub fn build(
    material: &Material,
    provider: &Arc<CryptoProvider>,
    config: &Config,
) -> Result<TlsConfigs, BuildError> {
    let roots = material
        .roots
        .clone()
        .ok_or("a CA bundle is required to verify peers")?;
    let versions = versions(config.tls.tls12);
    // Secrets may leave rustls only when the kernel can take them.
    let extract = config.ktls != crate::ktls::Mode::Off && config.ktls_support.available();
    let resolver = Arc::new(SingleCertAndKey::from(material.certified_key.clone()));

    let base_client_verifier = match config.client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Required => {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?
        }
        ClientAuth::Optional => {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .allow_unauthenticated()
                .build()?
        }
    };
    let inbound = config
        .inbound
        .iter()
        .map(|route| {
            let checked: Arc<dyn ClientCertVerifier> = if route.allow_san.is_empty() {
                base_client_verifier.clone()
            } else {
                let allowed: Arc<[SanPattern]> = route.allow_san.clone().into();
                Arc::new(SanPolicyVerifier::new(
                    base_client_verifier.clone(),
                    allowed,
                ))
            };
            let verifier: Arc<dyn ClientCertVerifier> = match config.client_auth {
                ClientAuth::None => checked,
                _ => Arc::new(CachingClientVerifier::new(checked)),
            };
            let mut server = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)?
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(resolver.clone());
            server.ignore_client_order = true;
            server.alpn_protocols = pick(&route.alpn, &config.tls.alpn);
            // One ticket is enough for a sidecar peer that reconnects; each costs an encryption.
            server.send_tls13_tickets = 1;
            server.enable_secret_extraction = extract;
            Ok(Arc::new(server))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;

    let server_verifier = Arc::new(CachingServerVerifier::new(
        WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?,
    ));
    let outbound = config
        .outbound
        .iter()
        .map(|route| {
            let mut client = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)?
                .dangerous()
                .with_custom_certificate_verifier(server_verifier.clone())
                .with_client_cert_resolver(resolver.clone());
            client.alpn_protocols = pick(&route.alpn, &config.tls.alpn);
            client.enable_secret_extraction = extract;
            Ok(Arc::new(client))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;

    Ok(TlsConfigs { inbound, outbound })
}

fn pick(route: &[Vec<u8>], default: &[Vec<u8>]) -> Vec<Vec<u8>> {
    if route.is_empty() { default } else { route }.to_vec()
}

/// Maps a handshake error to the `reason` label of `gembok_handshake_failures_total`.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E, PeerIncompatible as P};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => "eof",
            _ => "other",
        };
    };
    match tls {
        E::NoCertificatesPresented => "no_client_cert",
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension => "unknown_ca",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::NotValidForName | C::NotValidForNameContext { .. } => "name_mismatch",
            C::ApplicationVerificationFailure => "san_not_allowed",
            _ => "bad_certificate",
        },
        E::PeerIncompatible(
            P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::Tls13RequiredForQuic
            | P::ServerDoesNotSupportTls12Or13
            | P::ServerTlsVersionIsDisabledByOurConfig,
        ) => "protocol_version",
        E::PeerIncompatible(_) => "incompatible",
        E::AlertReceived(A::ProtocolVersion) => "protocol_version",
        E::AlertReceived(A::UnknownCA) => "peer_rejected",
        E::AlertReceived(_) => "peer_rejected",
        E::NoApplicationProtocol => "alpn",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aead_suites_in_preference_order() {
        for kind in [Provider::AwsLcRs, Provider::Ring] {
            let names: Vec<String> = provider(kind, false)
                .cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect();
            assert_eq!(
                names,
                [
                    "TLS13_AES_128_GCM_SHA256",
                    "TLS13_AES_256_GCM_SHA384",
                    "TLS13_CHACHA20_POLY1305_SHA256"
                ],
                "{kind:?}"
            );
            let with12 = provider(kind, true);
            assert_eq!(with12.cipher_suites.len(), 9);
            assert!(with12.cipher_suites.iter().all(|s| {
                let n = format!("{:?}", s.suite());
                n.contains("GCM") || n.contains("CHACHA20_POLY1305")
            }));
        }
    }

    #[test]
    fn maps_rustls_errors_to_metric_reasons() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            failure_reason(&io(rustls::Error::NoCertificatesPresented)),
            "no_client_cert"
        );
        assert_eq!(
            failure_reason(&io(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))),
            "unknown_ca"
        );
        assert_eq!(
            failure_reason(&io(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure
            ))),
            "san_not_allowed"
        );
        assert_eq!(
            failure_reason(&io(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::SupportedVersionsExtensionRequired
            ))),
            "protocol_version"
        );
        assert_eq!(
            failure_reason(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            "eof"
        );
    }
}
