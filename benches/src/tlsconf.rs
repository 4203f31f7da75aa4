//! The harness's own TLS endpoints (rustls): the load client of the "inbound only" topology,
//! and the clients and servers of the mTLS verification. Built with the proxy's provider and
//! suite policy (`gembok_proxy::tls::provider`), TLS 1.3 unless a check needs 1.2.

use std::sync::Arc;

use anyhow::Result;
use gembok_certs_dev::Leaf;
use gembok_proxy::config::Provider;
use rustls::client::Resumption;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::ServerName;

use crate::pki::{Pki, SERVER_NAME};

fn roots(leaf: &Leaf) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(leaf.ca_der())?;
    Ok(Arc::new(roots))
}

/// How the harness's TLS client behaves.
#[derive(Debug, Clone, Copy)]
pub struct ClientOpts {
    /// Present the trusted client certificate (`None`: no certificate; `Some(false)`: foreign).
    pub cert: Option<bool>,
    /// Keep a session cache so that later connections resume.
    pub resume: bool,
    /// Offer TLS 1.2 only (to check that a contender refuses it).
    pub tls12_only: bool,
}

impl ClientOpts {
    pub const FULL: ClientOpts = ClientOpts {
        cert: Some(true),
        resume: false,
        tls12_only: false,
    };
    pub const RESUMED: ClientOpts = ClientOpts {
        resume: true,
        ..Self::FULL
    };
}

pub fn client_config(pki: &Pki, opts: ClientOpts) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(gembok_proxy::tls::provider(
        Provider::AwsLcRs,
        Provider::AwsLcRs,
        opts.tls12_only,
    ));
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots(&pki.server.leaf)?);
    let mut config = match opts.cert {
        None => builder.with_no_client_auth(),
        Some(trusted) => {
            let leaf = if trusted {
                &pki.client.leaf
            } else {
                &pki.foreign_client
            };
            builder.with_client_auth_cert(leaf.chain_der(), leaf.key_der())?
        }
    };
    config.resumption = if opts.resume {
        Resumption::in_memory_sessions(1024)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// A server with the trusted inbound certificate that requires a client certificate from the
/// run's CA: what an outbound sidecar must be able to talk to.
pub fn probe_server_config(pki: &Pki) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(gembok_proxy::tls::provider(
        Provider::AwsLcRs,
        Provider::AwsLcRs,
        true,
    ));
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&pki.server.leaf)?, provider.clone())
            .build()?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server.leaf.chain_der(), pki.server.leaf.key_der())?;
    Ok(Arc::new(config))
}

/// A server whose certificate has the right name but a foreign root: an outbound sidecar must
/// refuse it.
pub fn rogue_server_config(pki: &Pki) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(gembok_proxy::tls::provider(
        Provider::AwsLcRs,
        Provider::AwsLcRs,
        true,
    ));
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(pki.foreign_server.chain_der(), pki.foreign_server.key_der())?;
    Ok(Arc::new(config))
}
