//! TLS 1.3 key updates for a kernel-protected connection (RFC 8446 §4.6.3, §7.2).
//!
//! Once the kernel holds the record keys, rustls is gone, and with it the key schedule. To follow
//! a peer's KeyUpdate (and to rotate our own key before the AES-GCM record limit), the proxy keeps
//! the two application traffic secrets of the connection and derives the next generation itself:
//!
//! ```text
//! secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length)
//! key        = HKDF-Expand-Label(secret_N+1, "key", "", key_length)
//! iv         = HKDF-Expand-Label(secret_N+1, "iv",  "", 12)
//! ```
//!
//! with the negotiated suite's own HKDF (from the crypto provider in use). The secrets reach us
//! through rustls' `KeyLog` hook, on a per-connection copy of the TLS config ([`SecretLog`]),
//! only for connections that may go to the kernel; they live in [`OkmBlock`]s, which zero their
//! memory when dropped. The hook logs the first generation; KeyUpdates that rustls made before
//! the hand-over are followed by matching the IV rustls hands over ([`Rekey::new`]).

use std::sync::{Arc, Mutex};

use nix::sys::socket::sockopt;
use rustls::crypto::cipher::NONCE_LEN;
use rustls::crypto::tls13::{Hkdf, OkmBlock};
use rustls::{
    ClientConfig, ConnectionTrafficSecrets, ExtractedSecrets, KeyLog, ServerConfig,
    SupportedCipherSuite,
};

use super::{Cipher, Handoff, Kernel, Version, setup};

const CLIENT_SECRET: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_SECRET: &str = "SERVER_TRAFFIC_SECRET_0";

/// Catches the first application traffic secrets of one TLS 1.3 connection.
#[derive(Default)]
pub struct SecretLog {
    captured: Mutex<Captured>,
}

#[derive(Default)]
struct Captured {
    client: Option<OkmBlock>,
    server: Option<OkmBlock>,
}

impl std::fmt::Debug for SecretLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretLog { .. }") // never print secrets
    }
}

impl KeyLog for SecretLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        match label {
            CLIENT_SECRET => captured.client = Some(OkmBlock::new(secret)),
            SERVER_SECRET => captured.server = Some(OkmBlock::new(secret)),
            _ => {}
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_SECRET || label == SERVER_SECRET
    }
}

impl SecretLog {
    /// The (client, server) secrets, once the handshake has logged both.
    fn take(&self) -> Option<(OkmBlock, OkmBlock)> {
        let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        Some((captured.client.take()?, captured.server.take()?))
    }
}

/// rustls' server and client configs: both carry a key log.
pub trait WithKeyLog: Clone {
    fn set_key_log(&mut self, log: Arc<dyn KeyLog>);
}

impl WithKeyLog for ServerConfig {
    fn set_key_log(&mut self, log: Arc<dyn KeyLog>) {
        self.key_log = log;
    }
}

impl WithKeyLog for ClientConfig {
    fn set_key_log(&mut self, log: Arc<dyn KeyLog>) {
        self.key_log = log;
    }
}

/// A per-connection copy of `config` that hands its traffic secrets to the returned log.
pub fn capturing<C: WithKeyLog>(config: &Arc<C>) -> (Arc<C>, Arc<SecretLog>) {
    let log = Arc::new(SecretLog::default());
    let mut config = (**config).clone();
    config.set_key_log(log.clone());
    (Arc::new(config), log)
}

/// The config a connection handshakes with, what its hand-over to the kernel needs, and its
/// traffic secrets for gembok's record layer. The secrets are captured (on a copy of the config)
/// only where they can be used: the `tls` ULP attached to this socket and the kernel can be
/// rekeyed, or gembok's record layer (`records`) may take the connection.
pub fn handoff<'k, C: WithKeyLog>(
    kernel: Option<&'k Kernel>,
    ulp_attached: bool,
    records: bool,
    config: Arc<C>,
) -> (Arc<C>, Option<Handoff<'k>>, Option<Arc<SecretLog>>) {
    let kernel_rekey = kernel.is_some_and(|k| k.support.rekey) && ulp_attached;
    let (config, secrets) = if kernel_rekey || records {
        let (config, secrets) = capturing(&config);
        (config, Some(secrets))
    } else {
        (config, None)
    };
    let handoff = kernel.map(|kernel| Handoff {
        kernel,
        secrets: secrets.clone().filter(|_| kernel_rekey),
    });
    (config, handoff, secrets)
}

/// How many generations past the first rustls' keys may be at the hand-over for a key schedule
/// to catch up with them (see [`TrafficKeys::catch_up`]).
const EARLY_UPDATES: usize = 8;

/// One direction's key schedule.
pub struct TrafficKeys {
    hkdf: &'static dyn Hkdf,
    secret: OkmBlock,
    cipher: Cipher,
}

impl TrafficKeys {
    /// Advances to the next generation and returns its key and IV.
    pub fn next_key(&mut self) -> KeyIv {
        self.step();
        self.current()
    }

    /// This generation's key and IV.
    fn current(&self) -> KeyIv {
        let expander = self.hkdf.expander_for_okm(&self.secret);
        let mut next = KeyIv {
            key: [0; 32],
            len: self.cipher.key_len(),
            iv: [0; NONCE_LEN],
        };
        expand_label(expander.as_ref(), b"key", &mut next.key[..next.len]);
        expand_label(expander.as_ref(), b"iv", &mut next.iv);
        next
    }

    /// Moves the secret to the next generation (RFC 8446 §7.2).
    fn step(&mut self) {
        let expander = self.hkdf.expander_for_okm(&self.secret);
        self.secret = expand_label_block(expander.as_ref(), b"traffic upd");
    }

    /// Follows the KeyUpdates that rustls processed or sent before the hand-over (a peer may
    /// send one right behind its Finished, in the same read): steps until the current
    /// generation's IV is `iv`, the one records are protected with now. IVs of two
    /// generations coincide with probability 2^-96. False if `iv` is not within
    /// [`EARLY_UPDATES`] generations.
    fn catch_up(&mut self, iv: &[u8; NONCE_LEN]) -> bool {
        for _ in 0..=EARLY_UPDATES {
            let expander = self.hkdf.expander_for_okm(&self.secret);
            let mut current = [0; NONCE_LEN];
            expand_label(expander.as_ref(), b"iv", &mut current);
            if current == *iv {
                return true;
            }
            self.step();
        }
        false
    }

    /// Advances to the next generation and returns its key for the kernel (sequence 0).
    pub fn advance(&mut self) -> sockopt::TlsCryptoInfo {
        let next = self.next_key();
        setup::crypto_info(self.cipher, Version::Tls13, next.key(), &next.iv, 0)
    }
}

/// One generation's traffic key and IV, zeroed when dropped.
pub struct KeyIv {
    key: [u8; 32],
    len: usize,
    pub iv: [u8; NONCE_LEN],
}

impl KeyIv {
    pub fn key(&self) -> &[u8] {
        &self.key[..self.len]
    }
}

impl Drop for KeyIv {
    fn drop(&mut self) {
        self.key.fill(0);
        self.iv.fill(0);
    }
}

/// Both directions of a TLS 1.3 connection.
pub struct Rekey {
    pub tx: TrafficKeys,
    pub rx: TrafficKeys,
}

impl std::fmt::Debug for Rekey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rekey { .. }") // never print secrets
    }
}

impl Rekey {
    /// The key schedules of a connection, from its captured secrets, at the generations of
    /// `in_use` (rustls' keys at the hand-over). `None` for TLS 1.2 (which has no KeyUpdate),
    /// when the secrets were not captured, or when they do not lead to the keys in use.
    pub fn new(
        log: &SecretLog,
        suite: SupportedCipherSuite,
        cipher: Cipher,
        is_server: bool,
        in_use: &ExtractedSecrets,
    ) -> Option<Self> {
        let hkdf = suite.tls13()?.hkdf_provider;
        let (client, server) = log.take()?;
        let keys = |secret| TrafficKeys {
            hkdf,
            secret,
            cipher,
        };
        let (tx, rx) = if is_server {
            (server, client)
        } else {
            (client, server)
        };
        let mut rekey = Self {
            tx: keys(tx),
            rx: keys(rx),
        };
        let caught_up = |keys: &mut TrafficKeys, (_, secrets): &(u64, ConnectionTrafficSecrets)| {
            setup::traffic_key(cipher, secrets).is_ok_and(|(_, iv)| keys.catch_up(iv))
        };
        if !caught_up(&mut rekey.tx, &in_use.tx) || !caught_up(&mut rekey.rx, &in_use.rx) {
            tracing::warn!(
                "the captured traffic secrets do not lead to the keys in use: \
                 a KeyUpdate will end this connection"
            );
            return None;
        }
        Some(rekey)
    }
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::Chacha20Poly1305 => 32,
        }
    }
}

/// `HkdfLabel` (RFC 8446 §7.1) with an empty context, as `expand`'s info pieces.
fn label_info<'a>(length: &'a [u8; 2], label_len: &'a [u8; 1], label: &'a [u8]) -> [&'a [u8]; 5] {
    [length, label_len, b"tls13 ", label, &[0]]
}

fn expand_label(expander: &dyn rustls::crypto::tls13::HkdfExpander, label: &[u8], out: &mut [u8]) {
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    expander
        .expand_slice(&label_info(&length, &label_len, label), out)
        .expect("key and IV lengths are far below HKDF's 255 * Hash.length");
}

fn expand_label_block(
    expander: &dyn rustls::crypto::tls13::HkdfExpander,
    label: &[u8],
) -> OkmBlock {
    let length = (expander.hash_len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    expander.expand_block(&label_info(&length, &label_len, label))
}

#[cfg(test)]
mod tests;
