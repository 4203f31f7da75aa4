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

/// (key, iv) of one generation of our schedule.
fn ours(keys: &TrafficKeys) -> (Vec<u8>, Vec<u8>) {
    let k = keys.current();
    (k.key().to_vec(), k.iv.to_vec())
}

fn check(provider: CryptoProvider, suite: SupportedCipherSuite, cipher: Cipher) {
    let (server_config, client_config) = configs(provider, suite);
    let (server_config, server_log) = capturing(&server_config);
    let (client_config, client_log) = capturing(&client_config);
    let (mut server, mut client) = connect(server_config, client_config);

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

    // Handed over now, both directions of both sides are one generation on: the schedules
    // built from the first generation's secrets catch up, to rustls' keys exactly.
    let server_now = server.dangerous_extract_secrets().unwrap();
    let client_now = client.dangerous_extract_secrets().unwrap();
    let mut server_keys =
        Rekey::new(&server_log, suite, cipher, true, &server_now).expect("server caught up");
    let mut client_keys =
        Rekey::new(&client_log, suite, cipher, false, &client_now).expect("client caught up");
    for (what, keys, rustls) in [
        ("server tx", &server_keys.tx, &server_now.tx.1),
        ("server rx", &server_keys.rx, &server_now.rx.1),
        ("client tx", &client_keys.tx, &client_now.tx.1),
        ("client rx", &client_keys.rx, &client_now.rx.1),
    ] {
        assert_eq!(ours(keys), rustls_key_iv(cipher, rustls), "{what}");
    }
    // The next generation: each side's sending key is the other's receiving key, for the
    // kernel as for user space.
    assert_eq!(
        key_iv(&server_keys.tx.advance()),
        key_iv(&client_keys.rx.advance())
    );
    let (client_tx, server_rx) = (client_keys.tx.next_key(), server_keys.rx.next_key());
    assert_eq!(
        (client_tx.key(), client_tx.iv),
        (server_rx.key(), server_rx.iv)
    );
    assert_ne!(
        ours(&client_keys.tx),
        rustls_key_iv(cipher, &client_now.tx.1)
    );
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
    let in_use = server.dangerous_extract_secrets().unwrap();
    let mut keys = Rekey::new(&log, suite, Cipher::Aes128Gcm, true, &in_use).unwrap();
    let first = key_iv(&keys.tx.advance());
    let second = key_iv(&keys.tx.advance());
    assert_ne!(first, second);
    // The secrets are handed out once.
    assert!(Rekey::new(&log, suite, Cipher::Aes128Gcm, true, &in_use).is_none());
}

/// A peer's KeyUpdate that rustls processed before the hand-over (it came in the same read as
/// the peer's Finished, or before the outbound's ticket): the schedule starts at rustls'
/// generation, and the peer's next KeyUpdate is followed. Starting from the captured first
/// generation instead, as before, the next key was the one already in use.
#[test]
fn updates_made_before_the_hand_over_are_followed() {
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let cipher = Cipher::Aes128Gcm;
    let (server_config, client_config) =
        configs(rustls::crypto::aws_lc_rs::default_provider(), suite);
    let (client_config, log) = capturing(&client_config);
    let (mut server, mut client) = connect(server_config, client_config);
    // Three server updates (each asks the client to update too) before the client hands over.
    for _ in 0..3 {
        server.refresh_traffic_keys().unwrap();
        pump(&mut server, &mut client);
        pump(&mut client, &mut server);
    }
    let client_now = client.dangerous_extract_secrets().unwrap();
    let mut keys = Rekey::new(&log, suite, cipher, false, &client_now).expect("caught up");
    assert_eq!(ours(&keys.rx), rustls_key_iv(cipher, &client_now.rx.1));
    assert_eq!(ours(&keys.tx), rustls_key_iv(cipher, &client_now.tx.1));
    // The server's fourth update: the client's schedule derives the server's new key.
    server.refresh_traffic_keys().unwrap();
    while server.wants_write() {
        server.write_tls(&mut Vec::new()).unwrap(); // the KeyUpdate, sent under the old key
    }
    let server_now = server.dangerous_extract_secrets().unwrap();
    let next = keys.rx.next_key();
    assert_eq!(
        (next.key().to_vec(), next.iv.to_vec()),
        rustls_key_iv(cipher, &server_now.tx.1)
    );
}

/// Keys that the captured secrets do not lead to (another connection's, or more updates than
/// the schedule follows) give no schedule: a KeyUpdate then ends the connection, as without
/// captured secrets, instead of opening records with a wrong key.
#[test]
fn keys_the_secrets_do_not_lead_to_give_no_schedule() {
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let (server_config, client_config) =
        configs(rustls::crypto::aws_lc_rs::default_provider(), suite);
    let (logged_config, log) = capturing(&server_config);
    let (_logged, _client) = connect(logged_config, client_config.clone());
    let (other, _client) = connect(server_config, client_config);
    let other_keys = other.dangerous_extract_secrets().unwrap();
    assert!(Rekey::new(&log, suite, Cipher::Aes128Gcm, true, &other_keys).is_none());
}
