//! Kernel TLS: after rustls completes the handshake, record protection moves into the kernel
//! and app → peer bytes move with splice(2), never entering user space.
//!
//! ```text
//!  attach the "tls" ULP ─► handshake (rustls, record-aligned reads) ─► flush ─┬─► extract secrets ─► TLS_TX + TLS_RX ─► kTLS data path
//!  (any failure up to here: keep the rustls connection, user-space data path) ─┘
//! ```
//!
//! - [`probe`]: once at start-up, on a loopback socket pair: is the `tls` ULP there, and which
//!   ciphers does the kernel take for TLS 1.3 and 1.2?
//! - [`record`]: during the handshake rustls reads one TLS record at a time, so nothing beyond the
//!   handshake is left buffered in rustls when the kernel takes over;
//! - [`setup`]: the hand-over itself, with a per-connection fallback to user space while that is
//!   still possible;
//! - [`stream`]: the kTLS socket as an async stream: control records (alerts, session tickets,
//!   KeyUpdate) handled, close_notify sent and received, the AES-GCM record limit enforced;
//! - [`splice`]: the zero-copy app → peer pump (peer → app is one-copy `recvmsg`/`send`, which
//!   also sees control records);
//! - `sys`: the one system call no safe wrapper covers (sending a control record).
//!
//! The secrets come from rustls' `dangerous_extract_secrets` (enabled only when kTLS is on).
//! We do not use the `ktls` crate: its probe binds 0.0.0.0, it panics on a ChangeCipherSpec
//! record and it silently ignores KeyUpdate. Without rustls' key schedule the kernel cannot be
//! rekeyed, so a peer's KeyUpdate closes the connection cleanly and is counted (Debian's 6.1 and
//! 6.12 kernels cannot rekey a TLS 1.3 socket anyway).

pub mod keys;
pub mod probe;
pub mod record;
pub mod setup;
pub mod splice;
pub mod stream;
mod sys;

pub use probe::{Support, probe};
pub use record::RecordAligned;
pub use setup::{Handoff, Handover, handover, prepare};
pub use stream::KtlsStream;

/// `--ktls`: whether to hand connections to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Use kTLS when the kernel supports it, per connection; user space otherwise.
    Auto,
    /// Always user space.
    Off,
    /// Refuse to start (exit 64) when the kernel has no kTLS.
    Require,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "off" => Ok(Mode::Off),
            "require" => Ok(Mode::Require),
            other => Err(format!("`{other}` is not one of auto, off, require")),
        }
    }
}

/// The ciphers the kernel can take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    pub const ALL: [Cipher; 3] = [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::Chacha20Poly1305,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "aes-128-gcm",
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::Chacha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// Records one key may protect before confidentiality weakens (RFC 8446 §5.5; rustls'
    /// limits). ChaCha20-Poly1305's is beyond reach.
    pub fn record_limit(self) -> u64 {
        match self {
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => 1 << 24,
            Cipher::Chacha20Poly1305 => u64::MAX,
        }
    }

    /// Records one sending key may protect: the operator's `limit` (`--record-limit`), at most
    /// a margin below the cipher's own (kTLS record counts are upper bounds, never exact).
    pub fn budget(self, limit: Option<u64>) -> u64 {
        let cipher_budget = self.record_limit().saturating_sub(1024);
        limit.map_or(cipher_budget, |l| l.min(cipher_budget))
    }
}

/// The kernel data path as this process uses it: what the probe found, and the operator's
/// per-key record budget.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub support: Support,
    /// `--record-limit`: rotate the sending key (or, without kernel rekey, close) after
    /// this many records; `None` for the cipher's own limit.
    pub record_limit: Option<u64>,
}

impl Kernel {
    /// Records one sending key may protect on this path.
    pub fn record_budget(&self, cipher: Cipher) -> u64 {
        cipher.budget(self.record_limit)
    }
}

/// TLS versions the kernel can take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}
