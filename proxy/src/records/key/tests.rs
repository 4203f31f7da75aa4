//! Our record protection against rustls' own, for every TLS 1.3 suite with both libraries: the
//! server side of an in-memory connection leaves rustls (its keys extracted into
//! [`RecordKey`]s), the client side stays with rustls, and records cross both ways.

use std::io::{Read, Write};

use rustls::{Connection, ConnectionTrafficSecrets};

use super::*;
use crate::ktls::setup::traffic_key;
use crate::test_tls::{configs, connect};

fn record_key(
    library: Provider,
    cipher: Cipher,
    (seq, s): (u64, ConnectionTrafficSecrets),
) -> RecordKey {
    let (key, iv) = traffic_key(cipher, &s).unwrap();
    RecordKey::new(library, cipher, key, iv, seq).unwrap()
}

/// A server side in our keys and a client still in rustls.
fn ours_and_rustls(library: Provider, suite: usize) -> (RecordKey, RecordKey, Connection, Cipher) {
    let provider = crate::tls::provider(library, library, false);
    let cipher = Cipher::ALL[suite];
    let (server, client) = configs(provider.clone(), provider.cipher_suites[suite]);
    let (server, client) = connect(server, client);
    let secrets = server.dangerous_extract_secrets().unwrap();
    let tx = record_key(library, cipher, secrets.tx);
    let rx = record_key(library, cipher, secrets.rx);
    (tx, rx, client, cipher)
}

/// Splits a wire image into whole records.
fn records(mut wire: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let len = record_len(wire).unwrap();
        out.push(wire[..len].to_vec());
        wire = &wire[len..];
    }
    out
}

/// One record of `content_type` sealed with `key`.
pub(crate) fn sealed(key: &mut RecordKey, content_type: u8, plain: &[u8]) -> Vec<u8> {
    let mut record = vec![0; HEADER + plain.len() + 1 + TAG];
    record[HEADER..HEADER + plain.len()].copy_from_slice(plain);
    key.seal(content_type, &mut record);
    record
}

fn every_suite_and_library() -> impl Iterator<Item = (Provider, usize)> {
    Provider::ALL
        .into_iter()
        .flat_map(|p| (0..Cipher::ALL.len()).map(move |s| (p, s)))
}

#[test]
fn records_from_rustls_open_in_place() {
    for (library, suite) in every_suite_and_library() {
        let (_, mut rx, mut client, cipher) = ours_and_rustls(library, suite);
        let message: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        client.writer().write_all(&message).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut got = Vec::new();
        for mut record in records(&wire) {
            let (content_type, content) = rx.open(&mut record).unwrap();
            assert_eq!(content_type, APPLICATION_DATA, "{library:?} {cipher:?}");
            got.extend_from_slice(&record[content]);
        }
        assert_eq!(got, message, "{library:?} {cipher:?}");
        assert_eq!(rx.seq(), 3, "40,000 bytes are three records");
    }
}

#[test]
fn records_we_seal_open_in_rustls_and_close_notify_ends_its_stream() {
    for (library, suite) in every_suite_and_library() {
        let (mut tx, _, mut client, cipher) = ours_and_rustls(library, suite);
        let mut wire = sealed(&mut tx, APPLICATION_DATA, b"hello from our record layer");
        wire.extend(sealed(&mut tx, APPLICATION_DATA, &[0xab; MAX_PLAINTEXT]));
        wire.extend(sealed(&mut tx, crate::post_handshake::ALERT, &[1, 0]));
        let mut slice = &wire[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).unwrap();
            client
                .process_new_packets()
                .unwrap_or_else(|e| panic!("{library:?} {cipher:?}: {e}"));
        }
        let mut got = Vec::new();
        client.reader().read_to_end(&mut got).unwrap(); // Ok, not an error: close_notify
        assert_eq!(&got[..27], b"hello from our record layer");
        assert_eq!(got.len(), 27 + MAX_PLAINTEXT, "{library:?} {cipher:?}");
        assert!(got[27..].iter().all(|&b| b == 0xab));
    }
}

#[test]
fn padding_is_removed_and_the_inner_type_found() {
    let (mut a, mut b) = twin_keys();
    // Sealed with "type" 0 after the payload: the inner plaintext is `hi`, type 23, zeros.
    let mut record = sealed(&mut a, 0, b"hi\x17\0\0\0");
    let (content_type, content) = b.open(&mut record).unwrap();
    assert_eq!(content_type, APPLICATION_DATA);
    assert_eq!(&record[content], b"hi");
    // All padding and no type is refused.
    let mut record = sealed(&mut a, 0, b"\0\0");
    assert_eq!(b.open(&mut record), Err(RecordError::NoContentType));
}

/// Two instances of one key (sender and receiver).
pub(crate) fn twin_keys() -> (RecordKey, RecordKey) {
    let key = [7u8; 16];
    let iv = [9u8; 12];
    let make = || RecordKey::new(Provider::AwsLcRs, Cipher::Aes128Gcm, &key, &iv, 0).unwrap();
    (make(), make())
}

#[test]
fn a_changed_byte_a_wrong_sequence_or_an_oversized_record_is_refused() {
    let (mut a, mut b) = twin_keys();
    let mut record = sealed(&mut a, APPLICATION_DATA, b"payload");
    record[HEADER + 2] ^= 1;
    assert_eq!(b.open(&mut record), Err(RecordError::BadRecordMac));

    // b expected sequence 0 and failed; a's next record has sequence 1.
    let mut record = sealed(&mut a, APPLICATION_DATA, b"payload");
    assert_eq!(b.open(&mut record), Err(RecordError::BadRecordMac));

    // The header is authenticated too.
    let (mut a, mut b) = twin_keys();
    let mut record = sealed(&mut a, APPLICATION_DATA, b"payload");
    record[1] = 1;
    assert_eq!(b.open(&mut record), Err(RecordError::BadRecordMac));

    let mut record = vec![0; HEADER + MAX_CIPHERTEXT + 1];
    record[..HEADER].copy_from_slice(&header(MAX_CIPHERTEXT + 1));
    assert_eq!(
        b.open(&mut record),
        Err(RecordError::Overflow(MAX_CIPHERTEXT + 1))
    );
    let mut record = sealed(&mut a, APPLICATION_DATA, b"x");
    record[0] = 22;
    assert_eq!(b.open(&mut record), Err(RecordError::Unprotected(22)));
}

#[test]
fn a_key_of_the_wrong_length_is_an_error_not_a_panic() {
    for library in Provider::ALL {
        let e = RecordKey::new(library, Cipher::Aes256Gcm, &[0; 16], &[0; 12], 0).unwrap_err();
        assert!(e.to_string().contains("16 bytes"), "{e}");
    }
}
