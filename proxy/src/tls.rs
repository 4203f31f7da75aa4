//! TLS settings: the crypto provider, and the rustls configs built from certificate material.
//!
//! One [`TlsConfigs`] holds a server config per inbound listener and a client config per
//! outbound route, all built from the same validated [`Material`]; `gembok-certwatch` publishes
//! it as one pointer, so a handshake always sees a certificate, key and CA that belong together.
//!
//! Choices: TLS 1.3 only unless `--tls12`; AEAD suites only, AES-128-GCM first (fastest on
//! AES-NI hardware), then AES-256-GCM, then ChaCha20-Poly1305, unless `--cipher-suites` names
//! them ([`suites`]); the server's order wins. Key
//! exchange keeps the provider's defaults (X25519MLKEM768 first with aws-lc-rs) unless
//! `--key-exchange` names the groups ([`key_exchange`]). A reload builds
//! fresh session caches and fresh verification caches (`verify_cache.rs`), so nothing verified
//! under an old CA bundle is reused under a new one.

use std::sync::Arc;

use gembok_certwatch::{BuildError, Material};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, WebPkiServerVerifier,
};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::{ClientAuth, Config, KxGroup, Provider, Suite, TlsOptions};
use crate::identity::{SanPattern, SanPolicyVerifier};
use crate::verify_cache::{CachingClientVerifier, CachingServerVerifier};

/// What every handshake of one certificate generation uses.
#[derive(Debug)]
pub struct TlsConfigs {
    /// Indexed like `Config::inbound`.
    pub inbound: Vec<Arc<ServerConfig>>,
    /// Indexed like `Config::outbound`.
    pub outbound: Vec<Arc<ClientConfig>>,
    /// Each outbound route's session store (also in its config), for per-connection views of it
    /// (`records::tickets`).
    pub sessions: Vec<Arc<dyn ClientSessionStore>>,
}

/// The provider with Gembok's suite policy applied: key exchange, signatures, randomness and
/// key loading from `kind`; the record protection (the cipher suites' AEAD) from `aead`.
/// rustls cipher suites are self-contained, so the two may come from different libraries.
pub fn provider(kind: Provider, aead: Provider, tls12: bool) -> CryptoProvider {
    let mut provider = match kind {
        Provider::AwsLcRs => rustls::crypto::aws_lc_rs::default_provider(),
        Provider::Ring => rustls::crypto::ring::default_provider(),
    };
    provider.cipher_suites = suites(aead, &Suite::ALL, tls12);
    provider
}

/// `list` (Gembok's order, or as `--cipher-suites` names them) as `aead`'s implementations, in
/// the same order; the TLS 1.2 ones only with `--tls12`.
pub fn suites(aead: Provider, list: &[Suite], tls12: bool) -> Vec<SupportedCipherSuite> {
    list.iter()
        .filter(|s| tls12 || s.tls13())
        .map(|s| s.implementation(aead))
        .collect()
}

/// The provider a running proxy uses, from its TLS options: [`provider`] with the record
/// library `--aead` picks ([`record_library`], also returned), the suites `--cipher-suites`
/// names ([`suites`]) and, when `--key-exchange` names them, those groups ([`key_exchange`])
/// instead of the provider's own list.
pub fn configured(options: &TlsOptions) -> (CryptoProvider, Provider) {
    let aead = record_library(options.provider, options.aead);
    let mut configured = provider(options.provider, aead, options.tls12);
    if let Some(list) = &options.cipher_suites {
        configured.cipher_suites = suites(aead, list, options.tls12);
    }
    if let Some(groups) = &options.key_exchange {
        configured.kx_groups = key_exchange(options.provider, groups);
    }
    (configured, aead)
}

/// `groups` (as `--key-exchange` names them) as `kind`'s implementations, in the same order.
/// `Config` refused the groups `kind` lacks ([`KxGroup::in_provider`]).
pub fn key_exchange(kind: Provider, groups: &[KxGroup]) -> Vec<&'static dyn SupportedKxGroup> {
    groups
        .iter()
        .filter_map(|g| g.implementation(kind))
        .collect()
}

/// What keeps `provider` from being FIPS throughout, in rustls' own judgement
/// (`CryptoProvider::fips`), one part per entry; empty when it is. The FIPS build refuses to
/// start otherwise (`config::fips` should have made that impossible).
pub fn not_fips(provider: &CryptoProvider) -> Vec<String> {
    let mut parts = Vec::new();
    // The module runs its own self-tests at power-on and before an algorithm's first use, and
    // aborts the process when one fails; running them all again here only cost start-up time.
    if let Err(why) = aws_lc_rs::try_fips_mode() {
        parts.push(format!("aws-lc-rs: {why}"));
    }
    for suite in provider.cipher_suites.iter().filter(|s| !s.fips()) {
        parts.push(format!("cipher suite {:?}", suite.suite()));
    }
    for group in provider.kx_groups.iter().filter(|g| !g.fips()) {
        parts.push(format!("key exchange group {:?}", group.name()));
    }
    if !provider.signature_verification_algorithms.fips() {
        parts.push("signature verification".to_owned());
    }
    if !provider.secure_random.fips() {
        parts.push("random numbers".to_owned());
    }
    if !provider.key_provider.fips() {
        parts.push("private keys".to_owned());
    }
    parts
}

/// The names of the groups `provider` offers, in order (for the start-up log), spelled as the
/// `kx` label of a handshake counted under one of them.
pub fn group_names(provider: &CryptoProvider) -> String {
    let names: Vec<&str> = provider
        .kx_groups
        .iter()
        .map(|g| g.name().as_str().unwrap_or("unknown"))
        .collect();
    names.join(",")
}

/// The names of the suites `provider` offers, in order (for the start-up log), spelled as the
/// `suite` label of a handshake counted under one of them.
pub fn suite_names(provider: &CryptoProvider) -> String {
    let names: Vec<&str> = provider
        .cipher_suites
        .iter()
        .map(|s| s.suite().as_str().unwrap_or("unknown"))
        .collect();
    names.join(",")
}

/// The library that protects records: `--aead`, or for `auto` the provider's own unless this
/// CPU is one where ring's AES-GCM is the fast one (see [`ring_has_the_faster_aes_gcm`]).
pub fn record_library(kind: Provider, choice: Option<Provider>) -> Provider {
    match choice {
        Some(pinned) => pinned,
        None if kind == Provider::AwsLcRs && ring_has_the_faster_aes_gcm() => Provider::Ring,
        None => kind,
    }
}

/// True on x86-64 CPUs with VAES, VPCLMULQDQ and AVX2 but without the AVX-512 set aws-lc's
/// wide AES-GCM needs (F, DQ, BW, VL): AMD Zen 3, Intel Alder Lake and later client cores.
/// There ring 0.17.14 runs AES-GCM with 256-bit VAES while aws-lc 0.47 falls back to 128-bit
/// AES-NI: in one full benchmark run on such a CPU, the pair's CPU per GiB was 0.68× nginx's
/// with aws-lc records and 0.55× with ring's (`benches/tuning.md`). With AVX-512 aws-lc is
/// level or ahead (15.3 against 10.6 GiB/s per core on 16 KiB records on an Intel Xeon with
/// AVX-512, `benches/tuning.md`) and without VAES both run the same AES-NI code, so elsewhere
/// the provider keeps its own.
pub fn ring_has_the_faster_aes_gcm() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let vaes_avx2 = std::arch::is_x86_feature_detected!("vaes")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
            && std::arch::is_x86_feature_detected!("avx2");
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        vaes_avx2 && !avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Sessions an outbound route remembers (rustls' default).
const SESSIONS_PER_ROUTE: usize = 256;

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
    // Secrets may leave rustls only when the kernel or gembok's record layer can take them.
    let extract = config.kernel_tls() || config.record_layer == crate::records::Choice::Gembok;
    let resolver = Arc::new(SingleCertAndKey::from(material.certified_key.clone()));

    // Revocation: what the lists say is refused; a certificate no list covers is not (the lists
    // name what is revoked, they need not cover every issuer), and a list past its next update
    // still counts. Without lists rustls checks no revocation at all.
    let client_verifier = || {
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(material.crls.iter().cloned())
            .allow_unknown_revocation_status()
    };
    let base_client_verifier = match config.client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Required => client_verifier().build()?,
        ClientAuth::Optional => client_verifier().allow_unauthenticated().build()?,
    };
    let inbound = config
        .inbound
        .iter()
        .map(|route| {
            // A new list means new verifiers, new verdict caches and new session caches: a
            // client a shrunk list refuses is not admitted by an old verdict or by resuming.
            let checked: Arc<dyn ClientCertVerifier> = if route.checks_sans() {
                Arc::new(SanPolicyVerifier::new(
                    base_client_verifier.clone(),
                    allowed(route, material),
                ))
            } else {
                base_client_verifier.clone()
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

    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(material.crls.iter().cloned())
        .allow_unknown_revocation_status()
        .build()?;
    let server_verifier = Arc::new(CachingServerVerifier::new(server_verifier));
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
            // rustls' default store, kept by hand so connections can watch it.
            let sessions: Arc<dyn ClientSessionStore> =
                Arc::new(ClientSessionMemoryCache::new(SESSIONS_PER_ROUTE));
            client.resumption = Resumption::store(sessions.clone());
            Ok((Arc::new(client), sessions))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    let (outbound, sessions) = outbound.into_iter().unzip();

    Ok(TlsConfigs {
        inbound,
        outbound,
        sessions,
    })
}

/// A route's allow-san patterns: its own, then those of its files as of this reload. None at
/// all (its files emptied) admits nobody, which is said once per reload.
fn allowed(route: &crate::config::InboundRoute, material: &Material) -> Arc<[SanPattern]> {
    let lists = material
        .allow_san
        .iter()
        .filter(|list| route.allow_san_files.contains(&list.path));
    let allowed: Arc<[SanPattern]> = route
        .allow_san
        .iter()
        .chain(lists.flat_map(|list| &list.patterns))
        .cloned()
        .collect();
    if allowed.is_empty() {
        tracing::warn!(listen = %route.listen, files = ?route.allow_san_files,
            "the allow-san lists of this listener are empty: every client is refused");
    }
    allowed
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
            C::Revoked => "revoked",
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
        E::InvalidCertRevocationList(_) => "bad_crl",
        // Bytes that are not well-formed TLS: most often a client speaking plaintext (HTTP) to
        // a TLS port, which deserves its own series on a dashboard.
        E::InvalidMessage(_) => "malformed",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aead_suites_in_preference_order() {
        let all = Provider::ALL;
        for (kind, aead) in all.into_iter().flat_map(|k| all.map(|a| (k, a))) {
            let names: Vec<String> = provider(kind, aead, false)
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
                "{kind:?} {aead:?}"
            );
            let with12 = provider(kind, aead, true);
            assert_eq!(with12.cipher_suites.len(), 9);
            assert!(with12.cipher_suites.iter().all(|s| {
                let n = format!("{:?}", s.suite());
                n.contains("GCM") || n.contains("CHACHA20_POLY1305")
            }));
        }
    }

    /// The same TLS 1.3 suite from the same library (suites compare equal by their number alone).
    fn same(a: &SupportedCipherSuite, b: &SupportedCipherSuite) -> bool {
        match (a, b) {
            (SupportedCipherSuite::Tls13(a), SupportedCipherSuite::Tls13(b)) => {
                std::ptr::eq(*a, *b)
            }
            _ => false,
        }
    }

    /// What the FIPS build checks at start names every part outside FIPS mode. This build links
    /// AWS-LC without its FIPS module, so all of it is (the FIPS build's own verdict is tested
    /// by starting it: `tests/tests/proxy/fips.rs`).
    #[test]
    fn not_fips_names_each_part_outside_fips_mode() {
        let parts = not_fips(&provider(Provider::AwsLcRs, Provider::AwsLcRs, false));
        assert!(parts[0].starts_with("aws-lc-rs: "), "{parts:?}");
        for part in [
            "TLS13_CHACHA20_POLY1305_SHA256",
            "X25519MLKEM768",
            "random numbers",
        ] {
            assert!(
                parts.iter().any(|p| p.contains(part)),
                "{part} in {parts:?}"
            );
        }
    }

    /// `--cipher-suites` replaces the list and its order, from the record library the `aead`
    /// choice picks; `auto` is the order above.
    #[test]
    fn named_suites_keep_their_order_and_their_record_library() {
        let options = |aead, tls12, cipher_suites| TlsOptions {
            fips: false,
            tls12,
            provider: Provider::AwsLcRs,
            aead: Some(aead),
            cipher_suites,
            key_exchange: None,
            alpn: Vec::new(),
        };
        let named = Some(vec![
            Suite::Tls13Chacha20Poly1305,
            Suite::EcdheRsaAes256Gcm,
            Suite::Tls13Aes256Gcm,
        ]);
        for aead in Provider::ALL {
            let (only13, _) = configured(&options(aead, false, named.clone()));
            assert_eq!(
                suite_names(&only13),
                "TLS13_CHACHA20_POLY1305_SHA256,TLS13_AES_256_GCM_SHA384"
            );
            let (with12, library) = configured(&options(aead, true, named.clone()));
            assert_eq!(
                suite_names(&with12),
                "TLS13_CHACHA20_POLY1305_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,\
                 TLS13_AES_256_GCM_SHA384"
            );
            assert_eq!(library, aead);
            for library in Provider::ALL {
                let theirs = Suite::Tls13Chacha20Poly1305.implementation(library);
                assert_eq!(
                    same(&with12.cipher_suites[0], &theirs),
                    library == aead,
                    "{aead:?} {library:?}"
                );
            }
            let (auto, _) = configured(&options(aead, false, None));
            assert_eq!(
                suite_names(&auto),
                "TLS13_AES_128_GCM_SHA256,TLS13_AES_256_GCM_SHA384,TLS13_CHACHA20_POLY1305_SHA256",
                "the default order the --help text quotes"
            );
        }
    }

    /// The suites come from the `aead` library and everything else from `kind`: an aws-lc-rs
    /// provider with ring records still offers X25519MLKEM768.
    #[test]
    fn records_and_key_exchange_come_from_their_own_library() {
        use rustls::crypto::{aws_lc_rs, ring};
        let hybrid = provider(Provider::AwsLcRs, Provider::Ring, false);
        assert!(same(
            &hybrid.cipher_suites[0],
            &ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        ));
        assert!(!same(
            &hybrid.cipher_suites[0],
            &aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        ));
        let kx: Vec<String> = hybrid
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(kx[0], "X25519MLKEM768", "{kx:?}");

        let plain = provider(Provider::AwsLcRs, Provider::AwsLcRs, false);
        assert!(same(
            &plain.cipher_suites[0],
            &aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        ));
        let reverse = provider(Provider::Ring, Provider::AwsLcRs, false);
        assert!(same(
            &reverse.cipher_suites[0],
            &aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        ));
        assert!(
            reverse
                .kx_groups
                .iter()
                .all(|g| format!("{:?}", g.name()) != "X25519MLKEM768")
        );
    }

    /// `--key-exchange` names map onto the provider's groups in the order given, and each name
    /// is rustls' own (the `kx` label a handshake is counted under).
    #[test]
    fn key_exchange_groups_keep_their_order_and_their_names() {
        for kind in Provider::ALL {
            let groups: Vec<KxGroup> = KxGroup::ALL
                .into_iter()
                .rev()
                .filter(|g| g.in_provider(kind))
                .collect();
            let mapped: Vec<&str> = key_exchange(kind, &groups)
                .iter()
                .map(|g| g.name().as_str().unwrap_or("unknown"))
                .collect();
            let names: Vec<&str> = groups.iter().map(|g| g.name()).collect();
            assert_eq!(mapped, names, "{kind:?}");
        }
        assert_eq!(
            KxGroup::ALL
                .iter()
                .filter(|g| g.in_provider(Provider::Ring))
                .count(),
            3
        );
        let options = |provider, key_exchange| TlsOptions {
            fips: false,
            tls12: false,
            provider,
            aead: None,
            cipher_suites: None,
            key_exchange,
            alpn: Vec::new(),
        };
        let groups =
            |provider, key_exchange| group_names(&configured(&options(provider, key_exchange)).0);
        assert_eq!(
            groups(Provider::AwsLcRs, None),
            "X25519MLKEM768,X25519,secp256r1,secp384r1",
            "the default list the --help text quotes"
        );
        assert_eq!(
            groups(
                Provider::AwsLcRs,
                Some(vec![KxGroup::Mlkem1024, KxGroup::X25519])
            ),
            "MLKEM1024,X25519"
        );
        assert_eq!(groups(Provider::Ring, None), "X25519,secp256r1,secp384r1");
    }

    #[test]
    fn a_pinned_aead_library_wins_and_auto_only_moves_aws_lc_to_ring() {
        for kind in Provider::ALL {
            for pinned in Provider::ALL {
                assert_eq!(record_library(kind, Some(pinned)), pinned);
            }
        }
        assert_eq!(record_library(Provider::Ring, None), Provider::Ring);
        let expected = if ring_has_the_faster_aes_gcm() {
            Provider::Ring
        } else {
            Provider::AwsLcRs
        };
        assert_eq!(record_library(Provider::AwsLcRs, None), expected);
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
        assert_eq!(
            failure_reason(&io(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::MessageTooLarge
            ))),
            "malformed"
        );
    }

    /// Every reason `failure_reason` can give is one of the series registered at zero (and
    /// named in the metric's help text).
    #[test]
    fn every_failure_reason_is_a_registered_label() {
        use rustls::PeerIncompatible as P;
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        let io = |e: E| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let tls = [
            E::NoCertificatesPresented,
            E::NoApplicationProtocol,
            E::DecryptError,
            E::AlertReceived(A::ProtocolVersion),
            E::AlertReceived(A::UnknownCA),
            E::AlertReceived(A::HandshakeFailure),
            E::PeerIncompatible(P::Tls12NotOffered),
            E::PeerIncompatible(P::NoKxGroupsInCommon),
            E::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        ]
        .into_iter()
        .chain(
            [
                C::UnknownIssuer,
                C::BadSignature,
                C::UnhandledCriticalExtension,
                C::Expired,
                C::NotValidYet,
                C::NotValidForName,
                C::ApplicationVerificationFailure,
                C::Revoked,
                C::BadEncoding,
            ]
            .map(E::InvalidCertificate),
        );
        let kinds = [
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::TimedOut,
        ];
        let reasons = tls
            .map(|e| failure_reason(&io(e)))
            .chain(kinds.map(|k| failure_reason(&k.into())));
        for reason in reasons {
            assert!(
                crate::metrics::HANDSHAKE_FAILURE_REASONS.contains(&reason),
                "{reason}"
            );
        }
    }
}
