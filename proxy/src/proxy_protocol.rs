//! The PROXY protocol v2 header an inbound route with `proxy-protocol=v2` writes to the app
//! before the client's first byte, so that a TCP app learns who is calling: the client's address
//! and port, and its verified identity.
//!
//! Layout (HAProxy's `proxy-protocol.txt`, section 2.2): the 12-byte signature, version 2 with
//! the PROXY command, TCP over IPv4 or IPv6, the length of what follows, the source (the client)
//! and destination (our listener) addresses and ports, then type-length-value fields:
//! - `PP2_TYPE_AUTHORITY` (0x02): the server name the client asked for (SNI), when it sent one;
//! - `PP2_TYPE_SSL` (0x20): the client came over TLS (`PP2_CLIENT_SSL`) with a certificate
//!   (`PP2_CLIENT_CERT_CONN` when presented on this connection, `PP2_CLIENT_CERT_SESS` when the
//!   session has one, resumed or not), verification 0 when the client's certificate was
//!   verified (a certificate that fails never gets this far) and 1 when it presented none (under
//!   `--inbound-client-auth optional` or `none`: the specification's "non-zero otherwise", so an
//!   app that trusts `verify` alone is not told an anonymous client was verified), and the
//!   sub-fields `PP2_SUBTYPE_SSL_VERSION` ("TLSv1.3"),
//!   `PP2_SUBTYPE_SSL_CIPHER` (IANA name) and `PP2_SUBTYPE_SSL_CN` (the certificate subject's
//!   common name, when it has one);
//! - `0xE0`, the first of the application-specific types: the client certificate's first URI
//!   SAN, its SPIFFE ID (the identity `allow-san` matched). No registered type carries a SAN.
//!
//! Written by hand (some forty lines of layout): the crates that build these headers leave the
//! SSL field's nested layout to the caller anyway, and a test parses our output with an
//! independent implementation (the `ppp` crate).

use std::net::{IpAddr, SocketAddr};

use gembok_certwatch::LeafInfo;
use rustls::{HandshakeKind, ServerConnection};

/// The 12-byte signature that starts every v2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// `PP2_TYPE_AUTHORITY`: the SNI.
pub const TYPE_AUTHORITY: u8 = 0x02;
/// `PP2_TYPE_SSL`.
pub const TYPE_SSL: u8 = 0x20;
/// `PP2_SUBTYPE_SSL_VERSION`, `_CN`, `_CIPHER`.
pub const SUBTYPE_SSL_VERSION: u8 = 0x21;
pub const SUBTYPE_SSL_CN: u8 = 0x22;
pub const SUBTYPE_SSL_CIPHER: u8 = 0x23;
/// Gembok's own field (`PP2_TYPE_MIN_CUSTOM`): the client certificate's first URI SAN.
pub const TYPE_SPIFFE_ID: u8 = 0xE0;

const CLIENT_SSL: u8 = 0x01;
const CLIENT_CERT_CONN: u8 = 0x02;
const CLIENT_CERT_SESS: u8 = 0x04;

/// The header for a connection from `client` to our listener at `local`, after its handshake.
pub fn header(client: SocketAddr, local: SocketAddr, tls: &ServerConnection) -> Vec<u8> {
    let leaf = tls
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| LeafInfo::from_der(der).ok());
    let cipher = tls
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .map(|name| name.replacen("TLS13_", "TLS_", 1));
    let identity = Identity {
        sni: tls.server_name(),
        version: tls.protocol_version().and_then(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            _ => None,
        }),
        cipher: cipher.as_deref(),
        certificate: leaf.as_ref(),
        presented_now: tls.handshake_kind() == Some(HandshakeKind::Full),
    };
    encode(client, local, &identity)
}

/// What the header says about the client beyond its address.
#[derive(Debug, Default)]
pub struct Identity<'a> {
    pub sni: Option<&'a str>,
    pub version: Option<&'a str>,
    pub cipher: Option<&'a str>,
    pub certificate: Option<&'a LeafInfo>,
    /// The certificate came in this handshake (not from a resumed session).
    pub presented_now: bool,
}

/// The header's bytes.
pub fn encode(client: SocketAddr, local: SocketAddr, id: &Identity<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, PROXY
    // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6: say what they are.
    match (client.ip().to_canonical(), local.ip().to_canonical()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.extend_from_slice(&[0x11, 0, 0]); // TCP over IPv4; length below
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        _ => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[0x21, 0, 0]); // TCP over IPv6
            out.extend_from_slice(&v6(client.ip()).octets());
            out.extend_from_slice(&v6(local.ip()).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());

    if let Some(sni) = id.sni {
        tlv(&mut out, TYPE_AUTHORITY, sni.as_bytes());
    }
    // Client flags, then `verify`: 0 only for a verified certificate.
    let verify: u32 = if id.certificate.is_some() { 0 } else { 1 };
    let mut ssl = vec![CLIENT_SSL];
    ssl.extend_from_slice(&verify.to_be_bytes());
    if id.certificate.is_some() {
        ssl[0] |= CLIENT_CERT_SESS
            | if id.presented_now {
                CLIENT_CERT_CONN
            } else {
                0
            };
    }
    if let Some(version) = id.version {
        tlv(&mut ssl, SUBTYPE_SSL_VERSION, version.as_bytes());
    }
    if let Some(cn) = id.certificate.and_then(|c| c.common_name.as_deref()) {
        tlv(&mut ssl, SUBTYPE_SSL_CN, cn.as_bytes());
    }
    if let Some(cipher) = id.cipher {
        tlv(&mut ssl, SUBTYPE_SSL_CIPHER, cipher.as_bytes());
    }
    tlv(&mut out, TYPE_SSL, &ssl);
    if let Some(uri) = id.certificate.and_then(|c| c.uris.first()) {
        tlv(&mut out, TYPE_SPIFFE_ID, uri.as_bytes());
    }

    // Certificates cap each field far below 64 KiB; the whole header stays well under it.
    let length = u16::try_from(out.len() - 16).unwrap_or(u16::MAX);
    out[14..16].copy_from_slice(&length.to_be_bytes());
    out
}

/// One type-length-value field (a value longer than 64 KiB is cut: no certificate has one).
fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let value = &value[..value.len().min(usize::from(u16::MAX))];
    out.push(kind);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use ppp::v2::{Addresses, Header, Type};

    use super::*;

    fn leaf() -> LeafInfo {
        LeafInfo {
            serial: "01".into(),
            subject: "CN=payment".into(),
            common_name: Some("payment".into()),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            dns_names: vec!["payment.ecommerce.svc".into()],
            uris: vec!["spiffe://cluster.local/ns/ecommerce/sa/payment".into()],
        }
    }

    /// Every field, read back by an independent parser.
    #[test]
    fn another_implementation_reads_every_field() {
        let leaf = leaf();
        let id = Identity {
            sni: Some("auth.ecommerce.svc"),
            version: Some("TLSv1.3"),
            cipher: Some("TLS_AES_128_GCM_SHA256"),
            certificate: Some(&leaf),
            presented_now: true,
        };
        let client: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let local: SocketAddr = "10.9.8.7:8443".parse().unwrap();
        let bytes = encode(client, local, &id);
        let header = Header::try_from(bytes.as_slice()).expect("a valid v2 header");
        assert_eq!(header.len(), bytes.len());
        match header.addresses {
            Addresses::IPv4(a) => {
                assert_eq!(a.source_address, std::net::Ipv4Addr::new(10, 1, 2, 3));
                assert_eq!(a.source_port, 40000);
                assert_eq!(a.destination_address, std::net::Ipv4Addr::new(10, 9, 8, 7));
                assert_eq!(a.destination_port, 8443);
            }
            other => panic!("{other:?}"),
        }
        let fields: Vec<(u8, Vec<u8>)> = header
            .tlvs()
            .map(|t| {
                let t = t.expect("a well-formed field");
                (t.kind, t.value.to_vec())
            })
            .collect();
        assert_eq!(
            fields[0],
            (u8::from(Type::Authority), b"auth.ecommerce.svc".to_vec())
        );
        assert_eq!(fields[1].0, u8::from(Type::SSL));
        let ssl = &fields[1].1;
        assert_eq!(ssl[0], CLIENT_SSL | CLIENT_CERT_CONN | CLIENT_CERT_SESS);
        assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verified");
        // The SSL field's sub-fields are laid out as fields too.
        let mut sub = Vec::new();
        let mut rest = &ssl[5..];
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
            sub.push((
                rest[0],
                String::from_utf8(rest[3..3 + len].to_vec()).unwrap(),
            ));
            rest = &rest[3 + len..];
        }
        assert_eq!(
            sub,
            [
                (SUBTYPE_SSL_VERSION, "TLSv1.3".to_owned()),
                (SUBTYPE_SSL_CN, "payment".to_owned()),
                (SUBTYPE_SSL_CIPHER, "TLS_AES_128_GCM_SHA256".to_owned()),
            ]
        );
        assert_eq!(
            fields[2],
            (
                TYPE_SPIFFE_ID,
                b"spiffe://cluster.local/ns/ecommerce/sa/payment".to_vec()
            )
        );
        assert_eq!(fields.len(), 3);
    }

    /// An IPv4 client of a dual-stack listener is said to be IPv4; IPv6 stays IPv6; a resumed
    /// session's certificate is not flagged as presented on this connection.
    #[test]
    fn families_and_resumed_sessions() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:40000".parse().unwrap();
        let local: SocketAddr = "[::ffff:10.9.8.7]:8443".parse().unwrap();
        let bytes = encode(mapped, local, &Identity::default());
        let header = Header::try_from(bytes.as_slice()).unwrap();
        assert!(
            matches!(header.addresses, Addresses::IPv4(_)),
            "{:?}",
            header.addresses
        );
        let ssl: Vec<_> = header.tlvs().map(|t| t.unwrap().value.to_vec()).collect();
        assert_eq!(
            ssl,
            [vec![CLIENT_SSL, 0, 0, 0, 1]],
            "TLS, no certificate: verify is not 0"
        );

        let client: SocketAddr = "[fd00::1]:40000".parse().unwrap();
        let local: SocketAddr = "[fd00::2]:8443".parse().unwrap();
        let leaf = leaf();
        let resumed = Identity {
            certificate: Some(&leaf),
            presented_now: false,
            ..Identity::default()
        };
        let bytes = encode(client, local, &resumed);
        let header = Header::try_from(bytes.as_slice()).unwrap();
        match header.addresses {
            Addresses::IPv6(a) => {
                assert_eq!(
                    a.source_address,
                    "fd00::1".parse::<std::net::Ipv6Addr>().unwrap()
                );
                assert_eq!(a.destination_port, 8443);
            }
            other => panic!("{other:?}"),
        }
        let first = header.tlvs().next().unwrap().unwrap();
        assert_eq!(first.value[0], CLIENT_SSL | CLIENT_CERT_SESS);
        assert_eq!(&first.value[1..5], &[0, 0, 0, 0], "verified");
    }
}
