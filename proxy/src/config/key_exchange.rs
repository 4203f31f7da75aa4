//! `--key-exchange`: the TLS key exchange groups a sidecar offers and accepts, in preference
//! order. Each group is looked up by name in the provider's own list of everything it
//! implements (rustls' `ALL_KX_GROUPS`), so which provider has which group is rustls' word,
//! not a table of ours.
//!
//! Names are rustls' spellings of the TLS registry's groups (they are also the `kx` label of
//! `gembok_tls_handshakes_total`), matched without regard to case.

use std::fmt;

use rustls::crypto::SupportedKxGroup;

use super::{Provider, unless_problems};

/// A key exchange group `--key-exchange` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KxGroup {
    /// The hybrid of X25519 and ML-KEM-768 (aws-lc-rs's first choice).
    X25519Mlkem768,
    /// The hybrid of P-256 and ML-KEM-768.
    Secp256r1Mlkem768,
    /// ML-KEM-768 alone.
    Mlkem768,
    /// ML-KEM-1024 alone (CNSA 2.0's choice).
    Mlkem1024,
    X25519,
    Secp256r1,
    Secp384r1,
}

impl KxGroup {
    pub const ALL: [KxGroup; 7] = [
        KxGroup::X25519Mlkem768,
        KxGroup::Secp256r1Mlkem768,
        KxGroup::Mlkem768,
        KxGroup::Mlkem1024,
        KxGroup::X25519,
        KxGroup::Secp256r1,
        KxGroup::Secp384r1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KxGroup::X25519Mlkem768 => "X25519MLKEM768",
            KxGroup::Secp256r1Mlkem768 => "secp256r1MLKEM768",
            KxGroup::Mlkem768 => "MLKEM768",
            KxGroup::Mlkem1024 => "MLKEM1024",
            KxGroup::X25519 => "X25519",
            KxGroup::Secp256r1 => "secp256r1",
            KxGroup::Secp384r1 => "secp384r1",
        }
    }

    /// An elliptic-curve group alone: the only kind TLS 1.2 can use, and the only kind ring has.
    pub fn classical(self) -> bool {
        matches!(
            self,
            KxGroup::X25519 | KxGroup::Secp256r1 | KxGroup::Secp384r1
        )
    }

    /// `provider`'s implementation of this group, found by name among all the groups it has;
    /// `None` where it has none (ring has no ML-KEM).
    pub fn implementation(self, provider: Provider) -> Option<&'static dyn SupportedKxGroup> {
        let all = match provider {
            Provider::AwsLcRs => rustls::crypto::aws_lc_rs::ALL_KX_GROUPS,
            Provider::Ring => rustls::crypto::ring::ALL_KX_GROUPS,
        };
        all.iter()
            .copied()
            .find(|g| g.name().as_str() == Some(self.name()))
    }

    /// Whether `provider` implements this group.
    pub fn in_provider(self, provider: Provider) -> bool {
        self.implementation(provider).is_some()
    }

    fn named(name: &str) -> Option<KxGroup> {
        KxGroup::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for KxGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `--key-exchange`: `auto` (`None`: the provider's own list), or group names separated
/// by commas, most preferred first. Every problem is reported, not just the first; `provider`
/// and `tls12` are `None` when their own flags were invalid (nothing to check against then).
pub fn parse(
    value: &str,
    provider: Option<Provider>,
    tls12: Option<bool>,
) -> Result<Option<Vec<KxGroup>>, Vec<String>> {
    if value.trim() == "auto" {
        return Ok(None);
    }
    let (groups, mut problems) = super::names_in_order(
        value,
        "group",
        &KxGroup::ALL.map(KxGroup::name),
        KxGroup::named,
    );
    if let Some(provider) = provider {
        let missing: Vec<&str> = groups
            .iter()
            .filter(|g| !g.in_provider(provider))
            .map(|g| g.name())
            .collect();
        if !missing.is_empty() {
            let verb = if missing.len() == 1 { "needs" } else { "need" };
            problems.push(format!(
                "{} {verb} --crypto-provider aws-lc-rs ({} has no ML-KEM)",
                missing.join(", "),
                provider.name()
            ));
        }
    }
    if tls12 == Some(true) && !groups.is_empty() && !groups.iter().any(|g| g.classical()) {
        problems.push(
            "--tls12 needs a classical group (X25519, secp256r1 or secp384r1) for TLS 1.2 peers"
                .to_owned(),
        );
    }
    unless_problems(Some(groups), problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_the_providers_own_list() {
        assert_eq!(parse("auto", Some(Provider::Ring), Some(true)), Ok(None));
    }

    #[test]
    fn names_are_taken_in_order_and_without_regard_to_case() {
        assert_eq!(
            parse(
                "x25519mlkem768, SecP256r1MLKEM768,X25519",
                Some(Provider::AwsLcRs),
                Some(false)
            ),
            Ok(Some(vec![
                KxGroup::X25519Mlkem768,
                KxGroup::Secp256r1Mlkem768,
                KxGroup::X25519
            ]))
        );
        for g in KxGroup::ALL {
            assert_eq!(KxGroup::named(g.name()), Some(g));
        }
    }

    #[test]
    fn every_problem_is_named() {
        let err = parse("X448,,x25519,X25519", Some(Provider::AwsLcRs), Some(false)).unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(
            err[0].starts_with("`X448` is not one of auto, X25519MLKEM768"),
            "{err:?}"
        );
        assert_eq!(err[1], "an empty group name");
        assert_eq!(err[2], "X25519 is named twice");
    }

    #[test]
    fn ring_has_only_the_classical_groups() {
        let err = parse(
            "X25519MLKEM768,MLKEM1024,X25519",
            Some(Provider::Ring),
            Some(false),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ["X25519MLKEM768, MLKEM1024 need --crypto-provider aws-lc-rs (ring has no ML-KEM)"]
        );
        assert!(parse("X25519,secp384r1", Some(Provider::Ring), Some(false)).is_ok());
        assert!(
            KxGroup::ALL
                .iter()
                .all(|g| g.in_provider(Provider::AwsLcRs))
        );
    }

    #[test]
    fn tls12_needs_a_classical_group() {
        let err = parse("X25519MLKEM768", Some(Provider::AwsLcRs), Some(true)).unwrap_err();
        assert!(
            err[0].starts_with("--tls12 needs a classical group"),
            "{err:?}"
        );
        assert!(parse("X25519MLKEM768,X25519", Some(Provider::AwsLcRs), Some(true)).is_ok());
        // Without --tls12, post-quantum groups alone are a valid policy.
        assert!(parse("X25519MLKEM768", Some(Provider::AwsLcRs), Some(false)).is_ok());
    }

    #[test]
    fn which_groups_are_post_quantum() {
        let pq: Vec<&str> = KxGroup::ALL
            .into_iter()
            .filter(|g| !g.classical())
            .map(KxGroup::name)
            .collect();
        assert_eq!(
            pq,
            [
                "X25519MLKEM768",
                "secp256r1MLKEM768",
                "MLKEM768",
                "MLKEM1024"
            ]
        );
    }
}
