//! Gembok's own TLS 1.3 record layer for established connections: what kTLS does, in user space.
//!
//! rustls' buffered API moves every received byte three times in user space (read-ahead buffer →
//! rustls' deframer, decrypted record → its plaintext queue, queue → our forwarding buffer) and
//! allocates per record. On the inbound sidecar of a bulk transfer those copies were 12 % of its
//! CPU (`benches/tuning.md`). After the handshake, exactly where the kTLS path hands the keys to
//! the kernel, this layer takes them instead:
//!
//! ```text
//!  handshake (rustls, reads bounded by records) ─► ktls::setup::release ─┬─► RecordStream
//!  (TLS 1.2, bytes rustls still holds: stay with rustls) ──────────────────┘
//! ```
//!
//! - [`key`]: sealing and opening one record in place with ring or aws-lc-rs (`--aead`);
//! - [`stream`]: the connection as an async stream: control records, KeyUpdate both ways,
//!   close_notify, the per-key record budget;
//! - [`tickets`]: when an outbound (client) connection may switch: once the server's session
//!   ticket is stored, so resumption keeps working;
//! - [`RecordsToApp`], [`AppToRecords`]: the two pumps; neither copies in user space. Opened
//!   records are written to the app from where they were decrypted (one `writev`); app bytes
//!   are read straight into record-shaped slots (one `readv`), sealed there and sent (one
//!   `write`).
//!
//! The keys come from rustls' `dangerous_extract_secrets`, the next generations from the traffic
//! secrets captured through its key log ([`crate::ktls::keys`]), so KeyUpdates are followed
//! and our key is rotated before the AES-GCM record limit, as rustls does.

pub mod key;
mod pump;
pub mod stream;
pub mod tickets;

use std::io;

use rustls::ConnectionTrafficSecrets;

pub use pump::{AppToRecords, RecordsToApp};
pub use stream::RecordStream;

use crate::config::Provider;
use crate::forward::BufferPolicy;
use crate::ktls::keys::{Rekey, SecretLog};
use crate::ktls::setup::{Handover, TlsSession, negotiated, release, traffic_key};
use crate::ktls::stream::KeyUpdates;
use crate::ktls::{Cipher, Version};
use key::RecordKey;

/// `--record-layer`: who protects records after the handshake in user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Gembok's record layer for TLS 1.3 connections it can take, rustls otherwise.
    Gembok,
    /// rustls throughout.
    Rustls,
}

/// The record layer as this process uses it.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The AEAD library (`--aead`, resolved).
    pub library: Provider,
    /// Records one sending key may protect (`--record-limit`), `None` for the cipher's own limit.
    pub record_limit: Option<u64>,
    pub buffers: BufferPolicy,
}

impl Layer {
    /// Records one sending key may protect on this path.
    pub fn record_budget(&self, cipher: Cipher) -> u64 {
        cipher.budget(self.record_limit)
    }
}

/// Hands `tls` to gembok's record layer if it can, else gives it back.
pub async fn handover<S: TlsSession>(
    tls: S,
    layer: &Layer,
    secrets: Option<&SecretLog>,
    key_updates: KeyUpdates,
) -> Handover<Box<RecordStream>, S> {
    let Some((cipher, Version::Tls13)) = negotiated(tls.common()) else {
        return Handover::Kept(tls, "tls12");
    };
    let released = match release(tls).await {
        Handover::Taken(released) => released,
        Handover::Kept(tls, reason) => return Handover::Kept(tls, reason),
        Handover::Failed(e, reason) => return Handover::Failed(e, reason),
    };
    let key = |(seq, secrets): &(u64, ConnectionTrafficSecrets)| {
        let (key, iv) = traffic_key(cipher, secrets)?;
        RecordKey::new(layer.library, cipher, key, iv, *seq).map_err(io::Error::other)
    };
    let (tx, rx) = match (key(&released.secrets.tx), key(&released.secrets.rx)) {
        (Ok(tx), Ok(rx)) => (tx, rx),
        (Err(e), _) | (_, Err(e)) => return Handover::Failed(e, "keys"),
    };
    let rekey = match (released.suite, secrets) {
        (Some(suite), Some(log)) => {
            Rekey::new(log, suite, cipher, released.is_server, &released.secrets)
        }
        _ => None,
    };
    Handover::Taken(Box::new(RecordStream::new(stream::Start {
        tcp: released.tcp,
        library: layer.library,
        cipher,
        tx,
        rx,
        early: released.early,
        unread: released.unread,
        rekey,
        record_budget: layer.record_budget(cipher),
        buffers: layer.buffers,
        key_updates,
        is_server: released.is_server,
    })))
}

#[cfg(test)]
mod tests;
