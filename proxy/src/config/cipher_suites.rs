//! `--cipher-suites`: the TLS cipher suites a sidecar offers and accepts, in preference order
//! (the inbound's order wins its handshakes), each taken from the record library `--aead`
//! picks.
//!
//! Every suite rustls has is an AEAD suite, so no list can let a weaker one in. Names are
//! rustls' spellings (also the `suite` label of `gembok_tls_handshakes_total`), matched without
//! regard to case; the TLS 1.3 suites also answer to their IANA names (`TLS_AES_128_GCM_SHA256`,
//! as OpenSSL's `-ciphersuites` and Go spell them).

use std::fmt;

use rustls::SupportedCipherSuite;

use super::{Provider, unless_problems};

/// A cipher suite `--cipher-suites` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Tls13Aes128Gcm,
    Tls13Aes256Gcm,
    Tls13Chacha20Poly1305,
    EcdheEcdsaAes128Gcm,
    EcdheRsaAes128Gcm,
    EcdheEcdsaAes256Gcm,
    EcdheRsaAes256Gcm,
    EcdheEcdsaChacha20Poly1305,
    EcdheRsaChacha20Poly1305,
}

impl Suite {
    /// Every suite, in Gembok's default order (`auto`): AES-128-GCM first (the fastest on
    /// AES-NI hardware), then AES-256-GCM, then ChaCha20-Poly1305; TLS 1.3 before TLS 1.2.
    pub const ALL: [Suite; 9] = [
        Suite::Tls13Aes128Gcm,
        Suite::Tls13Aes256Gcm,
        Suite::Tls13Chacha20Poly1305,
        Suite::EcdheEcdsaAes128Gcm,
        Suite::EcdheRsaAes128Gcm,
        Suite::EcdheEcdsaAes256Gcm,
        Suite::EcdheRsaAes256Gcm,
        Suite::EcdheEcdsaChacha20Poly1305,
        Suite::EcdheRsaChacha20Poly1305,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Suite::Tls13Aes128Gcm => "TLS13_AES_128_GCM_SHA256",
            Suite::Tls13Aes256Gcm => "TLS13_AES_256_GCM_SHA384",
            Suite::Tls13Chacha20Poly1305 => "TLS13_CHACHA20_POLY1305_SHA256",
            Suite::EcdheEcdsaAes128Gcm => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Suite::EcdheRsaAes128Gcm => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            Suite::EcdheEcdsaAes256Gcm => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Suite::EcdheRsaAes256Gcm => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            Suite::EcdheEcdsaChacha20Poly1305 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Suite::EcdheRsaChacha20Poly1305 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        }
    }

    /// A TLS 1.3 suite (the others are TLS 1.2's, usable only with `--tls12`).
    pub fn tls13(self) -> bool {
        self.name().starts_with("TLS13_")
    }

    /// The IANA name of a TLS 1.3 suite (rustls' name without the `13`); TLS 1.2 suites have
    /// their IANA names already.
    fn iana(self) -> Option<String> {
        self.tls13()
            .then(|| self.name().replacen("TLS13_", "TLS_", 1))
    }

    /// `library`'s implementation of this suite (both libraries have all nine).
    pub fn implementation(self, library: Provider) -> SupportedCipherSuite {
        macro_rules! from {
            ($library:ident) => {{
                use rustls::crypto::$library::cipher_suite as cs;
                match self {
                    Suite::Tls13Aes128Gcm => cs::TLS13_AES_128_GCM_SHA256,
                    Suite::Tls13Aes256Gcm => cs::TLS13_AES_256_GCM_SHA384,
                    Suite::Tls13Chacha20Poly1305 => cs::TLS13_CHACHA20_POLY1305_SHA256,
                    Suite::EcdheEcdsaAes128Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    Suite::EcdheRsaAes128Gcm => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    Suite::EcdheEcdsaAes256Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    Suite::EcdheRsaAes256Gcm => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    Suite::EcdheEcdsaChacha20Poly1305 => {
                        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                    }
                    Suite::EcdheRsaChacha20Poly1305 => {
                        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
                    }
                }
            }};
        }
        match library {
            Provider::AwsLcRs => from!(aws_lc_rs),
            Provider::Ring => from!(ring),
        }
    }

    fn named(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| {
            s.name().eq_ignore_ascii_case(name)
                || s.iana().is_some_and(|iana| iana.eq_ignore_ascii_case(name))
        })
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `--cipher-suites`: `auto` (`None`: Gembok's order, [`Suite::ALL`]), or suite names
/// separated by commas, most preferred first. Every problem is reported, not just the first;
/// `tls12` is `None` when `--tls12` itself was invalid (nothing to check against then).
pub fn parse(value: &str, tls12: Option<bool>) -> Result<Option<Vec<Suite>>, Vec<String>> {
    if value.trim().eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let (suites, mut problems) =
        super::names_in_order(value, "suite", &Suite::ALL.map(Suite::name), Suite::named);
    if !suites.is_empty() && !suites.iter().any(|s| s.tls13()) {
        problems.push(
            "no TLS 1.3 suite (TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384 or \
             TLS13_CHACHA20_POLY1305_SHA256): TLS 1.3 is always on"
                .to_owned(),
        );
    }
    let tls12_suites: Vec<&str> = suites
        .iter()
        .filter(|s| !s.tls13())
        .map(|s| s.name())
        .collect();
    match tls12 {
        Some(false) if !tls12_suites.is_empty() => {
            let (is, them) = if tls12_suites.len() == 1 {
                ("is a TLS 1.2 suite", "it")
            } else {
                ("are TLS 1.2 suites", "them")
            };
            problems.push(format!(
                "{} {is}: TLS 1.2 is off (--tls12 turns {them} on)",
                tls12_suites.join(", ")
            ));
        }
        Some(true) if !suites.is_empty() && tls12_suites.is_empty() => problems.push(
            "--tls12 needs a TLS 1.2 suite (TLS_ECDHE_ECDSA_WITH_... or TLS_ECDHE_RSA_WITH_...) \
             for TLS 1.2 peers"
                .to_owned(),
        ),
        _ => {}
    }
    unless_problems(Some(suites), problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_gembok_s_order() {
        assert_eq!(parse("auto", Some(true)), Ok(None));
        assert_eq!(parse(" AUTO ", Some(false)), Ok(None));
    }

    #[test]
    fn names_are_taken_in_order_in_either_spelling_and_any_case() {
        assert_eq!(
            parse(
                "tls13_chacha20_poly1305_sha256, TLS_AES_256_GCM_SHA384",
                Some(false)
            ),
            Ok(Some(vec![
                Suite::Tls13Chacha20Poly1305,
                Suite::Tls13Aes256Gcm
            ]))
        );
        for s in Suite::ALL {
            assert_eq!(Suite::named(s.name()), Some(s));
            if let Some(iana) = s.iana() {
                assert_eq!(Suite::named(&iana), Some(s));
            }
        }
        // A TLS 1.2 name never answers for a TLS 1.3 suite, nor the other way round.
        assert_eq!(
            Suite::named("TLS_AES_128_GCM_SHA256"),
            Some(Suite::Tls13Aes128Gcm)
        );
        assert_eq!(
            Suite::named("TLS13_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            None
        );
    }

    #[test]
    fn every_problem_is_named() {
        let err = parse(
            "TLS_AES_128_CCM_SHA256,,tls_aes_128_gcm_sha256,TLS13_AES_128_GCM_SHA256",
            Some(false),
        )
        .unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(
            err[0].starts_with("`TLS_AES_128_CCM_SHA256` is not one of auto, TLS13_AES_128_GCM"),
            "{err:?}"
        );
        assert_eq!(err[1], "an empty suite name");
        assert_eq!(err[2], "TLS13_AES_128_GCM_SHA256 is named twice");
    }

    #[test]
    fn tls12_suites_go_with_tls12_and_tls13_is_always_needed() {
        let err = parse(
            "TLS13_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Some(false),
        )
        .unwrap_err();
        assert_eq!(
            err,
            [
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 is a TLS 1.2 suite: TLS 1.2 is off \
                 (--tls12 turns it on)"
            ]
        );
        let err = parse("TLS13_AES_256_GCM_SHA384", Some(true)).unwrap_err();
        assert!(
            err[0].starts_with("--tls12 needs a TLS 1.2 suite"),
            "{err:?}"
        );
        let err = parse("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", Some(true)).unwrap_err();
        assert!(err[0].starts_with("no TLS 1.3 suite"), "{err:?}");
        assert!(
            parse(
                "TLS13_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                Some(true)
            )
            .is_ok()
        );
        // With --tls12 itself invalid, only what the list says by itself is checked.
        assert!(parse("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", None).is_err());
        assert!(parse("TLS13_AES_256_GCM_SHA384", None).is_ok());
    }

    #[test]
    fn every_suite_is_implemented_under_its_own_name() {
        for library in Provider::ALL {
            for s in Suite::ALL {
                let found = s.implementation(library);
                assert_eq!(found.suite().as_str(), Some(s.name()));
                assert_eq!(found.version() == &rustls::version::TLS13, s.tls13(), "{s}");
            }
        }
    }
}
