//! Remembering certificate chains that verified.
//!
//! A sidecar talks to the same few peers over and over, and every full handshake re-verifies the
//! same chain: two ECDSA signature checks per side (leaf by intermediate, intermediate by root),
//! about a third of a handshake's CPU. These wrappers remember a successful verdict, keyed by a
//! SHA-256 of the exact DER bytes of the chain (and, for servers, the name asked for), and reuse
//! it while it cannot have changed:
//! - only successes are remembered; a failure is re-checked every time;
//! - a verdict is reused only before the earliest `notAfter` in the chain, and for at most
//!   [`MAX_AGE`] after it was reached;
//! - the cache belongs to one certificate generation: a reload (for example a new CA bundle)
//!   builds new verifiers with empty caches;
//! - the handshake's own signature (CertificateVerify), which proves possession of the key, is
//!   always checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gembok_certwatch::LeafInfo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Longest a verdict is reused.
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// Most chains remembered; the cache starts over when full (peers are few).
const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct Verdicts {
    entries: Mutex<HashMap<[u8; 32], Verdict>>,
}

#[derive(Debug, Clone, Copy)]
struct Verdict {
    /// Earliest `notAfter` in the chain, seconds since the Unix epoch.
    valid_until: u64,
    reached: Instant,
}

impl Verdicts {
    fn key(
        name: &[u8],
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> [u8; 32] {
        // aws-lc's SHA-256: a verdict stands in for a verification, so in the FIPS build the
        // hash that keys it is the module's too.
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in std::iter::once(name)
            .chain(std::iter::once(end_entity.as_ref()))
            .chain(intermediates.iter().map(|c| c.as_ref()))
        {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    fn holds(&self, key: &[u8; 32], now: UnixTime) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .is_some_and(|v| now.as_secs() < v.valid_until && v.reached.elapsed() < MAX_AGE)
    }

    fn remember(
        &self,
        key: [u8; 32],
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) {
        let valid_until = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| LeafInfo::from_der(c).map(|info| info.not_after_unix() as u64))
            .try_fold(u64::MAX, |min, t| t.map(|t| min.min(t)));
        // A chain we cannot parse here is simply not remembered.
        let Ok(valid_until) = valid_until else { return };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            key,
            Verdict {
                valid_until,
                reached: Instant::now(),
            },
        );
    }
}

/// A client-certificate verifier that remembers successful chain verifications.
#[derive(Debug)]
pub struct CachingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    verdicts: Verdicts,
}

impl CachingClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self {
            inner,
            verdicts: Verdicts::default(),
        }
    }
}

impl ClientCertVerifier for CachingClientVerifier {
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
        let key = Verdicts::key(b"", end_entity, intermediates);
        if self.verdicts.holds(&key, now) {
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.verdicts.remember(key, end_entity, intermediates);
        Ok(verified)
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

/// A server-certificate verifier that remembers successful verifications per server name.
#[derive(Debug)]
pub struct CachingServerVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    verdicts: Verdicts,
}

impl CachingServerVerifier {
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Self {
        Self {
            inner,
            verdicts: Verdicts::default(),
        }
    }
}

impl ServerCertVerifier for CachingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = Verdicts::key(server_name.to_str().as_bytes(), end_entity, intermediates);
        if self.verdicts.holds(&key, now) {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.verdicts.remember(key, end_entity, intermediates);
        Ok(verified)
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Accepts chains whose first byte is 1 and counts calls.
    #[derive(Debug, Default)]
    struct Counting {
        calls: AtomicUsize,
    }

    impl ClientCertVerifier for Counting {
        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            &[]
        }
        fn verify_client_cert(
            &self,
            ee: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: UnixTime,
        ) -> Result<ClientCertVerified, rustls::Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if ee.as_ref().first() == Some(&1) {
                Ok(ClientCertVerified::assertion())
            } else {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                ))
            }
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            unreachable!()
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            unreachable!()
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![]
        }
    }

    fn verdicts_with(key: [u8; 32], valid_until: u64) -> Verdicts {
        let v = Verdicts::default();
        v.entries.lock().unwrap().insert(
            key,
            Verdict {
                valid_until,
                reached: Instant::now(),
            },
        );
        v
    }

    #[test]
    fn failures_are_never_remembered() {
        let inner = Arc::new(Counting::default());
        let cache = CachingClientVerifier::new(inner.clone());
        let bad = CertificateDer::from(vec![0u8, 1, 2]);
        let now = UnixTime::now();
        for _ in 0..3 {
            assert!(cache.verify_client_cert(&bad, &[], now).is_err());
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn unparsable_chains_are_verified_every_time() {
        // Our fake "certificate" verifies but cannot be parsed for its notAfter: not remembered.
        let inner = Arc::new(Counting::default());
        let cache = CachingClientVerifier::new(inner.clone());
        let fake = CertificateDer::from(vec![1u8, 2, 3]);
        cache
            .verify_client_cert(&fake, &[], UnixTime::now())
            .unwrap();
        cache
            .verify_client_cert(&fake, &[], UnixTime::now())
            .unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_verdict_holds_only_before_the_chain_expires() {
        let key = [7u8; 32];
        let now = UnixTime::now().as_secs();
        assert!(verdicts_with(key, now + 60).holds(&key, UnixTime::now()));
        assert!(!verdicts_with(key, now).holds(&key, UnixTime::now()));
        assert!(!verdicts_with(key, now + 60).holds(&[8u8; 32], UnixTime::now()));
    }

    #[test]
    fn keys_separate_names_and_chains() {
        let a = CertificateDer::from(vec![1u8]);
        let b = CertificateDer::from(vec![2u8]);
        assert_ne!(Verdicts::key(b"x", &a, &[]), Verdicts::key(b"y", &a, &[]));
        assert_ne!(
            Verdicts::key(b"", &a, std::slice::from_ref(&b)),
            Verdicts::key(b"", &a, &[])
        );
        // Length prefixes keep ("ab","") and ("a","b") apart.
        assert_ne!(
            Verdicts::key(b"", &a, std::slice::from_ref(&b)),
            Verdicts::key(&[1u8], &b, &[])
        );
    }

    /// Counts calls and delegates to a real WebPKI verifier.
    #[derive(Debug)]
    struct Delegating {
        inner: Arc<dyn ClientCertVerifier>,
        calls: AtomicUsize,
    }

    impl ClientCertVerifier for Delegating {
        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            self.inner.root_hint_subjects()
        }
        fn verify_client_cert(
            &self,
            ee: &CertificateDer<'_>,
            im: &[CertificateDer<'_>],
            now: UnixTime,
        ) -> Result<ClientCertVerified, rustls::Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.verify_client_cert(ee, im, now)
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    #[test]
    fn a_real_chain_is_verified_once_then_remembered() {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let webpki =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let counting = Arc::new(Delegating {
            inner: webpki,
            calls: AtomicUsize::new(0),
        });
        let cache = CachingClientVerifier::new(counting.clone());
        for _ in 0..5 {
            cache
                .verify_client_cert(leaf.der(), &[], UnixTime::now())
                .unwrap();
        }
        assert_eq!(
            counting.calls.load(Ordering::SeqCst),
            1,
            "verified once, remembered four times"
        );

        // A different chain is verified on its own.
        let other_key = KeyPair::generate().unwrap();
        let other = CertificateParams::new(vec!["other.test".to_owned()])
            .unwrap()
            .signed_by(&other_key, &issuer)
            .unwrap();
        let _ = cache.verify_client_cert(other.der(), &[], UnixTime::now());
        assert_eq!(counting.calls.load(Ordering::SeqCst), 2);
    }
}
