//! What the kernel can do, found out once at start-up on a loopback socket pair.
//!
//! `/proc/sys/net/ipv4/tcp_available_ulp` is only a hint (the `tls` module loads on first use),
//! so the probe attaches the ULP to a real connected socket and installs TX and RX keys (dummy
//! ones) for every cipher and TLS version, then replaces a TLS 1.3 key to learn whether the
//! kernel can follow a KeyUpdate (Linux 6.14 and later). It binds 127.0.0.1 only, never a
//! wildcard address.

use std::fmt;
use std::net::{TcpListener, TcpStream};

use nix::sys::socket::{setsockopt, sockopt};

use super::{Cipher, Version, setup};

/// The probe's findings.
#[derive(Debug, Clone)]
pub struct Support {
    /// Contents of `/proc/sys/net/ipv4/tcp_available_ulp` (or why it could not be read).
    pub available_ulp: String,
    /// Why the `tls` ULP could not be attached, if it could not.
    pub ulp_error: Option<String>,
    /// (cipher, version) pairs whose TX and RX keys the kernel accepted.
    pub supported: Vec<(Cipher, Version)>,
    /// Whether the kernel takes a new TLS 1.3 key on a socket that already has one (rekey).
    pub rekey: bool,
}

impl Support {
    /// A probe that was not run (`--ktls off`).
    pub fn not_probed() -> Self {
        Self {
            available_ulp: String::new(),
            ulp_error: Some("kTLS disabled (--ktls off)".to_owned()),
            supported: Vec::new(),
            rekey: false,
        }
    }

    /// Whether any connection could use kTLS.
    pub fn available(&self) -> bool {
        self.ulp_error.is_none() && !self.supported.is_empty()
    }

    pub fn supports(&self, cipher: Cipher, version: Version) -> bool {
        self.supported.contains(&(cipher, version))
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ulp_error {
            Some(e) => write!(
                f,
                "user space (kTLS unavailable: {e}; tcp_available_ulp = {:?})",
                self.available_ulp
            ),
            None if self.supported.is_empty() => {
                write!(f, "user space (the kernel accepts no supported cipher)")
            }
            None => {
                let mut list: Vec<String> = Vec::new();
                for v in [Version::Tls13, Version::Tls12] {
                    let ciphers: Vec<&str> = self
                        .supported
                        .iter()
                        .filter(|(_, sv)| *sv == v)
                        .map(|(c, _)| c.name())
                        .collect();
                    if !ciphers.is_empty() {
                        list.push(format!(
                            "{} {}",
                            if v == Version::Tls13 {
                                "TLS 1.3"
                            } else {
                                "TLS 1.2"
                            },
                            ciphers.join(", ")
                        ));
                    }
                }
                let rekey = if self.rekey {
                    "KeyUpdate followed in the kernel"
                } else {
                    "no kernel rekey: a KeyUpdate ends the connection"
                };
                write!(f, "kTLS ({}; {rekey})", list.join("; "))
            }
        }
    }
}

/// Probes the kernel. Takes a few milliseconds.
pub fn probe() -> Support {
    let available_ulp = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let mut support = Support {
        available_ulp,
        ulp_error: None,
        supported: Vec::new(),
        rekey: false,
    };
    for version in [Version::Tls13, Version::Tls12] {
        for cipher in Cipher::ALL {
            match try_keys(cipher, version) {
                Ok(()) => support.supported.push((cipher, version)),
                Err(Step::Ulp(e)) => {
                    support.ulp_error = Some(e);
                    return support;
                }
                Err(Step::Keys) => {}
            }
        }
    }
    support.rekey = support
        .supported
        .iter()
        .find(|(_, v)| *v == Version::Tls13)
        .is_some_and(|&(cipher, _)| try_rekey(cipher).is_ok());
    support
}

enum Step {
    Ulp(String),
    Keys,
}

fn pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

fn try_keys(cipher: Cipher, version: Version) -> Result<(), Step> {
    let (client, _server) = pair().map_err(|e| Step::Ulp(format!("loopback socket pair: {e}")))?;
    setsockopt(&client, sockopt::TcpUlp::default(), b"tls")
        .map_err(|e| Step::Ulp(format!("TCP_ULP \"tls\": {e}")))?;
    let info = setup::crypto_info(cipher, version, &[0u8; 32], &[0u8; 12], 0);
    setsockopt(&client, sockopt::TcpTlsTx, &info).map_err(|_| Step::Keys)?;
    setsockopt(&client, sockopt::TcpTlsRx, &info).map_err(|_| Step::Keys)?;
    Ok(())
}

/// A second TLS 1.3 transmit key on the same socket: older kernels refuse it (EBUSY).
fn try_rekey(cipher: Cipher) -> nix::Result<()> {
    let (client, _server) = pair().map_err(|_| nix::Error::EIO)?;
    setsockopt(&client, sockopt::TcpUlp::default(), b"tls")?;
    let first = setup::crypto_info(cipher, Version::Tls13, &[1u8; 32], &[1u8; 12], 0);
    setsockopt(&client, sockopt::TcpTlsTx, &first)?;
    let next = setup::crypto_info(cipher, Version::Tls13, &[2u8; 32], &[2u8; 12], 0);
    setsockopt(&client, sockopt::TcpTlsTx, &next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_what_the_kernel_offers_consistently() {
        let s = probe();
        let ulp_listed = s.available_ulp.split_whitespace().any(|u| u == "tls");
        if s.available() {
            // The ULP is registered once it has been attached.
            let after = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap();
            assert!(after.split_whitespace().any(|u| u == "tls"), "{after}");
            assert!(s.to_string().starts_with("kTLS ("), "{s}");
        } else {
            assert!(!s.rekey);
            assert!(!ulp_listed || s.supported.is_empty(), "{s:?}");
            assert!(s.to_string().starts_with("user space ("), "{s}");
        }
    }

    #[test]
    fn not_probed_is_unavailable() {
        assert!(!Support::not_probed().available());
    }
}
