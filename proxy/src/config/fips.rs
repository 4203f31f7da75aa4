//! FIPS mode: what a proxy built with `--features fips` allows.
//!
//! That build links aws-lc-rs against AWS-LC's FIPS module (aws-lc-fips-sys), so key exchange,
//! signatures, randomness and the record AEAD all run inside it. What the module cannot vouch
//! for is refused at start (exit 64, every problem listed), never quietly replaced:
//! - ring (`--crypto-provider ring`, `--aead ring`): not the module;
//! - ChaCha20-Poly1305 and X25519 (`--cipher-suites`, `--key-exchange`): not FIPS-approved
//!   (X25519MLKEM768 is: its ML-KEM-768 share is approved, and SP 800-56C allows the hybrid);
//! - `--ktls require`: the kernel's AES-GCM is not the module;
//! - `--record-layer gembok`: FIPS 140-3 IG C.H wants the module itself to check that each
//!   AES-GCM nonce follows TLS 1.3's construction, which AWS-LC does only for a key that has
//!   sealed every record of its direction from sequence number 0 (`TlsRecordSealingKey`); ours
//!   takes over after rustls has sent records, so records stay with rustls, which seals
//!   through that key.
//!
//! The defaults follow (`auto` means the allowed choice): `--aead` aws-lc-rs, `--record-layer`
//! rustls, `--ktls` off, the AES-GCM suites, the module's groups (X25519MLKEM768, secp256r1,
//! secp384r1). At start the proxy asks rustls whether the provider it built is FIPS throughout
//! and refuses to run otherwise (`lib.rs`), so these tables are checked against rustls' own
//! verdict each time a FIPS build starts (`tests/tests/proxy/fips.rs` starts one with every
//! suite and group allowed here).

use super::{KxGroup, Problems, Provider, Suite};
use crate::records::Choice;

/// Whether this binary is the FIPS build.
pub const BUILD: bool = cfg!(feature = "fips");

impl Suite {
    /// Whether FIPS 140-3 approves this suite's AEAD (AES-GCM; not ChaCha20-Poly1305).
    pub fn fips_approved(self) -> bool {
        !matches!(
            self,
            Suite::Tls13Chacha20Poly1305
                | Suite::EcdheEcdsaChacha20Poly1305
                | Suite::EcdheRsaChacha20Poly1305
        )
    }
}

impl KxGroup {
    /// Whether FIPS 140-3 approves this group (every one but X25519 alone).
    pub fn fips_approved(self) -> bool {
        self != KxGroup::X25519
    }
}

/// The choices of the command line that FIPS mode constrains, as parsed (`None` where the flag
/// itself was invalid and already reported).
pub(super) struct Choices<'a> {
    pub provider: Option<Provider>,
    /// `--aead`: `Some(None)` is `auto`.
    pub aead: Option<Option<Provider>>,
    pub cipher_suites: Option<&'a [Suite]>,
    pub key_exchange: Option<&'a [KxGroup]>,
    pub ktls: Option<crate::ktls::Mode>,
    /// `--record-layer`, resolved: only an explicit `gembok` is `Gembok` in FIPS mode.
    pub record_layer: Option<Choice>,
}

/// What `--cipher-suites auto` is in FIPS mode: the approved suites, in Gembok's order.
pub fn approved_suites() -> Vec<Suite> {
    Suite::ALL
        .into_iter()
        .filter(|s| s.fips_approved())
        .collect()
}

/// The names in `list` (a flag's parsed value, `None` when invalid or `auto`) that `approved`
/// refuses.
fn unapproved<T: Copy>(
    list: Option<&[T]>,
    approved: impl Fn(T) -> bool,
    name: impl Fn(T) -> &'static str,
) -> Vec<&'static str> {
    let list = list.unwrap_or_default().iter().copied();
    list.filter(|&t| !approved(t)).map(name).collect()
}

/// Pushes one problem per flag whose value a FIPS build cannot run with.
pub(super) fn check(c: &Choices<'_>, p: &mut Problems) {
    const BUILD_NOTE: &str = "this is the FIPS build";
    if c.provider == Some(Provider::Ring) {
        p.push(
            "crypto-provider",
            format!("ring: {BUILD_NOTE}, all cryptography runs in AWS-LC's FIPS module (aws-lc-rs, the default)"),
        );
    }
    if c.aead == Some(Some(Provider::Ring)) {
        p.push(
            "aead",
            format!("ring: {BUILD_NOTE}, records are sealed by AWS-LC's FIPS module (aws-lc-rs; `auto` picks it)"),
        );
    }
    let refused = |names: Vec<&str>, approved: Vec<&str>| {
        let is = if names.len() == 1 { "is" } else { "are" };
        format!(
            "{} {is} not FIPS-approved, and {BUILD_NOTE} (approved: {})",
            names.join(", "),
            approved.join(", ")
        )
    };
    let names = unapproved(c.cipher_suites, Suite::fips_approved, Suite::name);
    if !names.is_empty() {
        let approved = approved_suites().into_iter().filter(|s| s.tls13());
        let approved = approved
            .map(Suite::name)
            .chain(["the TLS 1.2 AES-GCM suites"]);
        p.push("cipher-suites", refused(names, approved.collect()));
    }
    let names = unapproved(c.key_exchange, KxGroup::fips_approved, KxGroup::name);
    if !names.is_empty() {
        let approved = KxGroup::ALL.into_iter().filter(|g| g.fips_approved());
        p.push(
            "key-exchange",
            refused(names, approved.map(KxGroup::name).collect()),
        );
    }
    if c.ktls == Some(crate::ktls::Mode::Require) {
        p.push(
            "ktls",
            format!("require: {BUILD_NOTE}, and the kernel's AES-GCM is not AWS-LC's FIPS module; records stay in user space (`auto` and `off` do that)"),
        );
    }
    if c.record_layer == Some(Choice::Gembok) {
        p.push(
            "record-layer",
            format!("gembok: {BUILD_NOTE}; its AES-GCM nonces are not checked by the FIPS module (FIPS 140-3 IG C.H), rustls' records are (`auto` picks rustls)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;
    use crate::config::{Config, ConfigErrors};

    /// The configuration `args` give the FIPS build (`fips`) or the default one.
    fn config(fips: bool, args: &[&str]) -> Result<Config, ConfigErrors> {
        let base = ["gembok-proxy", "--cert-dir", "/certs", "--inbound"];
        let argv = base.iter().chain(&["[::]:8443=127.0.0.1:8080"]).chain(args);
        let cli = Cli::try_parse_from(argv).expect("clap accepts the shape");
        Config::parse(&cli.proxy, fips, crate::ktls::Support::not_probed)
    }

    #[test]
    fn every_choice_outside_the_module_is_refused_at_once() {
        let args = [
            "--crypto-provider",
            "ring",
            "--aead",
            "ring",
            "--cipher-suites",
            "TLS13_AES_256_GCM_SHA384,TLS13_CHACHA20_POLY1305_SHA256",
            "--key-exchange",
            "secp256r1,X25519",
            "--ktls",
            "require",
            "--record-layer",
            "gembok",
        ];
        let problems = config(true, &args).unwrap_err().0;
        let flags: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            flags,
            [
                "--crypto-provider",
                "--aead",
                "--cipher-suites",
                "--key-exchange",
                "--ktls",
                "--record-layer"
            ],
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| p.contains("FIPS")), "{problems:#?}");
        // Only the refused names are named as refused.
        assert!(problems[2].starts_with("--cipher-suites: TLS13_CHACHA20_POLY1305_SHA256 is not"));
        assert!(problems[3].starts_with("--key-exchange: X25519 is not"));
        // The default build takes all of it, but `--ktls require` on a kernel without kTLS
        // (what the probe these tests give reports).
        let problems = config(false, &args).unwrap_err().0;
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("--ktls: require, but this kernel cannot"));
    }

    #[test]
    fn auto_picks_what_the_module_allows() {
        let fips = config(true, &[]).unwrap();
        assert!(fips.tls.fips);
        assert_eq!(fips.record_layer, Choice::Rustls);
        assert_eq!(fips.ktls, crate::ktls::Mode::Off);
        assert_eq!(fips.tls.aead, Some(Provider::AwsLcRs));
        let (provider, aead) = crate::tls::configured(&fips.tls);
        assert_eq!(aead, Provider::AwsLcRs);
        assert_eq!(
            crate::tls::suite_names(&provider),
            "TLS13_AES_128_GCM_SHA256,TLS13_AES_256_GCM_SHA384"
        );

        let default = config(false, &[]).unwrap();
        assert!(!default.tls.fips);
        assert_eq!(default.record_layer, Choice::Gembok);
        assert_eq!(default.ktls, crate::ktls::Mode::Auto);
        assert_eq!(default.tls.aead, None);
        let (provider, _) = crate::tls::configured(&default.tls);
        assert!(crate::tls::suite_names(&provider).contains("CHACHA20"));
    }

    #[test]
    fn every_approved_suite_and_group_and_the_explicit_allowed_choices_are_taken() {
        let suites: Vec<&str> = Suite::ALL
            .into_iter()
            .filter(|s| s.fips_approved())
            .map(Suite::name)
            .collect();
        let groups: Vec<&str> = KxGroup::ALL
            .into_iter()
            .filter(|g| g.fips_approved())
            .map(KxGroup::name)
            .collect();
        assert_eq!(suites.len(), 6, "AES-GCM: 2 in TLS 1.3, 4 in TLS 1.2");
        assert_eq!(groups.len(), 6, "all but X25519");
        let (suites, groups) = (suites.join(","), groups.join(","));
        let args = [
            "--tls12",
            "true",
            "--cipher-suites",
            &suites,
            "--key-exchange",
            &groups,
            "--crypto-provider",
            "aws-lc-rs",
            "--aead",
            "aws-lc-rs",
            "--ktls",
            "off",
            "--record-layer",
            "rustls",
        ];
        let fips = config(true, &args).unwrap();
        let (provider, _) = crate::tls::configured(&fips.tls);
        assert_eq!(crate::tls::suite_names(&provider), suites);
        assert_eq!(crate::tls::group_names(&provider), groups);
    }
}
