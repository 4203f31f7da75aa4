//! Our key schedule against rustls' own: both ends of an in-memory connection rotate their keys
//! (rustls' KeyUpdate with `update_requested`), then rustls' extracted keys must equal what
//! [`TrafficKeys::advance`] derives from the captured first-generation secrets.

use std::io::{Read, Write};

use nix::sys::socket::sockopt::TlsCryptoInfo;
use rustls::ConnectionTrafficSecrets;
use rustls::crypto::CryptoProvider;

use super::*;
use crate::test_tls::{configs, connect, pump};

/// (key, iv) of what the kernel would be given.
fn key_iv(info: &TlsCryptoInfo) -> (Vec<u8>, Vec<u8>) {
    match info {
        TlsCryptoInfo::Aes128Gcm(c) => (c.key.to_vec(), [&c.salt[..], &c.iv[..]].concat()),
        TlsCryptoInfo::Aes256Gcm(c) => (c.key.to_vec(), [&c.salt[..], &c.iv[..]].concat()),
        TlsCryptoInfo::Chacha20Poly1305(c) => (c.key.to_vec(), c.iv.to_vec()),
    }
}

fn rustls_key_iv(cipher: Cipher, secrets: &ConnectionTrafficSecrets) -> (Vec<u8>, Vec<u8>) {
    let (key, iv) = setup::traffic_key(cipher, secrets).unwrap();
    (key.to_vec(), iv.to_vec())
}

fn check(provider: CryptoProvider, suite: SupportedCipherSuite, cipher: Cipher) {
    let (server_config, client_config) = configs(provider, suite);
    let (server_config, server_log) = capturing(&server_config);
    let (client_config, client_log) = capturing(&client_config);
    let (mut server, mut client) = connect(server_config, client_config);
    let mut server_keys = Rekey::new(&server_log, suite, cipher, true).expect("server secrets");
    let mut client_keys = Rekey::new(&client_log, suite, cipher, false).expect("client secrets");

    // The client rotates and asks the server to rotate too; data flows both ways after it.
    client.refresh_traffic_keys().unwrap();
    client
        .writer()
        .write_all(b"after the client's update")
        .unwrap();
    pump(&mut client, &mut server);
    server
        .writer()
        .write_all(b"after the server's update")
        .unwrap();
    pump(&mut server, &mut client);
    let mut got = vec![0u8; 25];
    server.reader().read_exact(&mut got).unwrap();
    client.reader().read_exact(&mut got).unwrap();

    let server_now = server.dangerous_extract_secrets().unwrap();
    let client_now = client.dangerous_extract_secrets().unwrap();
    let (server_tx, server_rx) = (server_keys.tx.advance(), server_keys.rx.advance());
    let (client_tx, client_rx) = (client_keys.tx.advance(), client_keys.rx.advance());
    assert_eq!(
        key_iv(&server_tx),
        rustls_key_iv(cipher, &server_now.tx.1),
        "server tx"
    );
    assert_eq!(
        key_iv(&server_rx),
        rustls_key_iv(cipher, &server_now.rx.1),
        "server rx"
    );
    assert_eq!(
        key_iv(&client_tx),
        rustls_key_iv(cipher, &client_now.tx.1),
        "client tx"
    );
    assert_eq!(
        key_iv(&client_rx),
        rustls_key_iv(cipher, &client_now.rx.1),
        "client rx"
    );
    // Each side's sending key is the other's receiving key.
    assert_eq!(key_iv(&server_tx), key_iv(&client_rx));
}

#[test]
fn the_next_generation_matches_rustls_for_every_suite_and_provider() {
    use crate::config::Provider;
    // Gembok's TLS 1.3 suites, in its preference order.
    let ciphers = [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::Chacha20Poly1305,
    ];
    for kind in Provider::ALL {
        let provider = crate::tls::provider(kind, kind, false);
        assert_eq!(provider.cipher_suites.len(), ciphers.len(), "{kind:?}");
        for (suite, cipher) in provider.cipher_suites.clone().into_iter().zip(ciphers) {
            check(provider.clone(), suite, cipher);
        }
    }
}

#[test]
fn a_second_generation_differs_from_the_first() {
    let (server_config, client_config) = configs(
        rustls::crypto::aws_lc_rs::default_provider(),
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
    );
    let (server_config, log) = capturing(&server_config);
    let (server, _client) = connect(server_config, client_config);
    let suite = server.negotiated_cipher_suite().unwrap();
    let mut keys = Rekey::new(&log, suite, Cipher::Aes128Gcm, true).unwrap();
    let first = key_iv(&keys.tx.advance());
    let second = key_iv(&keys.tx.advance());
    assert_ne!(first, second);
    // The secrets are handed out once.
    assert!(Rekey::new(&log, suite, Cipher::Aes128Gcm, true).is_none());
}
