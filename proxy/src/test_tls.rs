//! In-memory rustls connections for unit tests: a self-signed server, one suite, TLS 1.3 (or
//! the version asked for), secret extraction on.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection,
    SupportedCipherSuite,
};

pub fn configs(
    provider: CryptoProvider,
    suite: SupportedCipherSuite,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    configs_for(provider, suite, &rustls::version::TLS13)
}

/// As [`configs`], for the protocol version `version` (whose suite `suite` must be).
pub fn configs_for(
    provider: CryptoProvider,
    suite: SupportedCipherSuite,
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["server.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        ..provider
    });
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    server.enable_secret_extraction = true;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.der().to_vec()))
        .unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.enable_secret_extraction = true;
    (Arc::new(server), Arc::new(client))
}

/// Moves every pending TLS byte from one end to the other.
pub fn pump(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut slice = &wire[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// A completed in-memory handshake.
pub fn connect(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> (Connection, Connection) {
    let mut server = Connection::from(ServerConnection::new(server).unwrap());
    let name = ServerName::try_from("server.test").unwrap();
    let mut client = Connection::from(ClientConnection::new(client, name).unwrap());
    while client.is_handshaking() || server.is_handshaking() {
        pump(&mut client, &mut server);
        pump(&mut server, &mut client);
    }
    (server, client)
}

/// A client that sends its Finished and its first record, `first`, in one write, as a fast
/// peer does: sans-IO rustls on a blocking socket to `addr`, driven until the server's last
/// flight is read, when the Finished is queued but not yet sent. Returns the connection, its
/// socket and the bytes of the Finished and the record, for the caller to send.
pub fn finished_with_first_record(
    config: Arc<ClientConfig>,
    addr: std::net::SocketAddr,
    first: &[u8],
) -> (ClientConnection, std::net::TcpStream, Vec<u8>) {
    use std::io::Write;
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    let name = ServerName::try_from("server.test").unwrap();
    let mut tls = ClientConnection::new(config, name).unwrap();
    while tls.is_handshaking() {
        if tls.wants_write() {
            tls.write_tls(&mut tcp).unwrap();
        } else {
            tls.read_tls(&mut tcp).unwrap();
            tls.process_new_packets().unwrap();
        }
    }
    tls.writer().write_all(first).unwrap();
    let mut wire = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut wire).unwrap();
    }
    (tls, tcp, wire)
}
