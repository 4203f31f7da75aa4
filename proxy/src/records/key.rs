//! TLS 1.3 record protection (RFC 8446 §5.2, §5.3) with one traffic key, in place.
//!
//! A record on the wire is `type(23) | 0x0303 | length | AEAD(plaintext | content type | padding)`;
//! the 5-byte header is the additional data, and the nonce is the traffic IV XOR the record's
//! 64-bit sequence number. rustls' `MessageEncrypter` seals into a fresh buffer (one copy and one
//! allocation per record); here the caller lays the plaintext out where the record will be sent
//! from, and sealing and opening never move it. The AEAD is ring's or aws-lc-rs's (`--aead`), the
//! same code rustls would call.

use std::ops::Range;

use crate::config::Provider;
use crate::ktls::Cipher;
use crate::post_handshake::{BAD_RECORD_MAC, RECORD_OVERFLOW, UNEXPECTED_MESSAGE};

pub use crate::ktls::record::{HEADER, record_len};
pub use crate::post_handshake::APPLICATION_DATA;
/// The AEAD tag (all three TLS 1.3 AEADs).
pub const TAG: usize = 16;
/// The largest plaintext one record carries.
pub const MAX_PLAINTEXT: usize = 16 * 1024;
/// The largest ciphertext a peer may send: plaintext, content type, padding and tag within
/// 2^14 + 256 (RFC 8446 §5.2).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// A whole record of the largest size we send: header, plaintext, content type, tag.
pub const MAX_SEALED: usize = HEADER + MAX_PLAINTEXT + 1 + TAG;

/// A record that cannot be opened; each maps to the alert that tells the peer why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("TLS record failed authentication (bad_record_mac)")]
    BadRecordMac,
    #[error("TLS record of {0} bytes is over the 2^14 + 256 limit (record_overflow)")]
    Overflow(usize),
    #[error("TLS record with outer type {0}: only protected records may follow the handshake")]
    Unprotected(u8),
    #[error("TLS record without a content type (all padding)")]
    NoContentType,
}

impl RecordError {
    /// The fatal alert description (RFC 8446 §6.2).
    pub fn alert(&self) -> u8 {
        match self {
            RecordError::BadRecordMac => BAD_RECORD_MAC,
            RecordError::Overflow(_) => RECORD_OVERFLOW,
            RecordError::Unprotected(_) | RecordError::NoContentType => UNEXPECTED_MESSAGE,
        }
    }
}

/// The traffic key could not be made (a key of the wrong length: never from rustls).
#[derive(Debug, thiserror::Error)]
#[error("{library} refused a {cipher:?} key of {len} bytes")]
pub struct KeyError {
    library: &'static str,
    cipher: Cipher,
    len: usize,
}

// ring keeps its AES key schedule inline (544 bytes); the stream holding two keys is boxed.
#[allow(clippy::large_enum_variant)]
enum Aead {
    Ring(ring::aead::LessSafeKey),
    AwsLc(aws_lc_rs::aead::LessSafeKey),
}

/// The two libraries have the same `aead` API over different types, so each use is written once:
/// `$a` names the library's `aead` module; `new` makes an [`Aead`] of `library`'s key, `key`
/// runs `$body` with `$key` bound to an [`Aead`]'s key.
macro_rules! per_library {
    (new $library:expr, |$a:ident| $key:expr) => {
        match $library {
            Provider::Ring => {
                use ring::aead as $a;
                Aead::Ring($key)
            }
            Provider::AwsLcRs => {
                use aws_lc_rs::aead as $a;
                Aead::AwsLc($key)
            }
        }
    };
    (key $aead:expr, |$key:ident, $a:ident| $body:expr) => {
        match $aead {
            Aead::Ring($key) => {
                use ring::aead as $a;
                $body
            }
            Aead::AwsLc($key) => {
                use aws_lc_rs::aead as $a;
                $body
            }
        }
    };
}

/// One direction's traffic key and its record sequence.
pub struct RecordKey {
    aead: Aead,
    iv: [u8; 12],
    seq: u64,
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordKey")
            .field("seq", &self.seq)
            .finish_non_exhaustive() // never print keys
    }
}

impl RecordKey {
    /// A key for `cipher` from `library`, whose next record has sequence number `seq`.
    pub fn new(
        library: Provider,
        cipher: Cipher,
        key: &[u8],
        iv: &[u8; 12],
        seq: u64,
    ) -> Result<Self, KeyError> {
        let refused = || KeyError {
            library: library.name(),
            cipher,
            len: key.len(),
        };
        let aead = per_library!(new library, |a| {
            let alg = match cipher {
                Cipher::Aes128Gcm => &a::AES_128_GCM,
                Cipher::Aes256Gcm => &a::AES_256_GCM,
                Cipher::Chacha20Poly1305 => &a::CHACHA20_POLY1305,
            };
            a::LessSafeKey::new(a::UnboundKey::new(alg, key).map_err(|_| refused())?)
        });
        Ok(Self { aead, iv: *iv, seq })
    }

    /// The sequence number of the next record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn nonce(&self) -> [u8; 12] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    /// Seals one record in place. `record` is exactly the record to send: room for the header,
    /// the plaintext at `HEADER..`, then room for the content type and the tag (so
    /// `record.len() - HEADER - 1 - TAG` plaintext bytes, at most [`MAX_PLAINTEXT`]).
    pub fn seal(&mut self, content_type: u8, record: &mut [u8]) {
        let len = record.len();
        debug_assert!((HEADER + 1 + TAG..=MAX_SEALED).contains(&len));
        let header = header(len - HEADER);
        record[..HEADER].copy_from_slice(&header);
        record[len - TAG - 1] = content_type;
        let nonce = self.nonce();
        let (body, tag) = record[HEADER..].split_at_mut(len - HEADER - TAG);
        // Sealing fails only for inputs far beyond a record's size.
        let sealed = per_library!(key & self.aead, |key, a| {
            let nonce = a::Nonce::assume_unique_for_key(nonce);
            key.seal_in_place_separate_tag(nonce, a::Aad::from(header), body)
                .map(|t| tag.copy_from_slice(t.as_ref()))
                .map_err(drop)
        });
        sealed.expect("a record is within the AEAD's input limit");
        self.seq += 1;
    }

    /// Opens one whole record (header included) in place and returns its inner content type
    /// and where its content now lies in `record` (padding removed).
    pub fn open(&mut self, record: &mut [u8]) -> Result<(u8, Range<usize>), RecordError> {
        let header: [u8; HEADER] = record[..HEADER].try_into().expect("a whole record");
        if header[0] != APPLICATION_DATA {
            return Err(RecordError::Unprotected(header[0]));
        }
        let body_len = record.len() - HEADER;
        if body_len > MAX_CIPHERTEXT {
            return Err(RecordError::Overflow(body_len));
        }
        if body_len < 1 + TAG {
            return Err(RecordError::BadRecordMac);
        }
        let nonce = self.nonce();
        let body = &mut record[HEADER..];
        let plain = per_library!(key & self.aead, |key, a| {
            let nonce = a::Nonce::assume_unique_for_key(nonce);
            key.open_in_place(nonce, a::Aad::from(header), body)
                .map(|p| p.len())
                .map_err(drop)
        })
        .map_err(|_| RecordError::BadRecordMac)?;
        self.seq += 1;
        // TLSInnerPlaintext: content, the content type, then zeros.
        let inner = &record[HEADER..HEADER + plain];
        let Some(type_at) = inner.iter().rposition(|&b| b != 0) else {
            return Err(RecordError::NoContentType);
        };
        if type_at > MAX_PLAINTEXT {
            return Err(RecordError::Overflow(type_at));
        }
        Ok((inner[type_at], HEADER..HEADER + type_at))
    }
}

/// The header of a protected record whose body (ciphertext and tag) is `body_len` bytes.
pub fn header(body_len: usize) -> [u8; HEADER] {
    let [hi, lo] = (body_len as u16).to_be_bytes();
    [APPLICATION_DATA, 3, 3, hi, lo]
}

#[cfg(test)]
pub(super) mod tests;
