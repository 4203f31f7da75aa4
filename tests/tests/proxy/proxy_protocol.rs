//! `--inbound ...,proxy-protocol=v2`: the app learns who is calling (address and verified
//! identity) from a PROXY protocol v2 header, read here by an independent parser (`ppp`).

use std::net::SocketAddr;

use gembok_tests::pki::{CertDir, TestPki, dns_name, spiffe};
use gembok_tests::proxy::Proxy;
use gembok_tests::tls::Client;
use ppp::v2::{Addresses, Header, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one v2 header: its 16 fixed bytes, then as many as its length says.
async fn read_header(app: &mut TcpStream) -> Vec<u8> {
    let mut header = vec![0u8; 16];
    app.read_exact(&mut header).await.unwrap();
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    header.resize(16 + len, 0);
    app.read_exact(&mut header[16..]).await.unwrap();
    header
}

/// What a header says: (source, destination, fields by type).
fn parse(bytes: &[u8]) -> (SocketAddr, SocketAddr, Vec<(u8, Vec<u8>)>) {
    let header = Header::try_from(bytes).expect("a valid PROXY v2 header");
    let (src, dst) = match header.addresses {
        Addresses::IPv4(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        other => panic!("not TCP over IPv4: {other:?}"),
    };
    let fields = header
        .tlvs()
        .map(|t| {
            let t = t.expect("a well-formed field");
            (t.kind, t.value.to_vec())
        })
        .collect();
    (src, dst, fields)
}

/// An app listener, an inbound proxy in front of it with `options`, and a client certified as
/// "client" (the certificate directory must outlive the proxy).
async fn setup(options: &str) -> (TcpListener, Proxy, Client, CertDir) {
    let pki = TestPki::new();
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = CertDir::new(&pki.workload("server"));
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.local_addr().unwrap(), options)
        .start();
    let client = Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    (app, proxy, client, dir)
}

#[tokio::test]
async fn the_app_learns_the_callers_address_and_identity_before_its_first_byte() {
    let (app, proxy, client, _dir) = setup(",proxy-protocol=v2").await;
    for round in 0..2 {
        // The second connection resumes the first one's session: the certificate is the
        // session's, not presented again, and the header says so.
        let mut tls = client
            .connect(proxy.inbound[0], &dns_name("server"))
            .await
            .unwrap();
        let caller = tls.get_ref().0.local_addr().unwrap();
        tls.write_all(b"hello").await.unwrap();
        let (mut conn, _) = app.accept().await.unwrap();

        let header = read_header(&mut conn).await;
        let (src, dst, fields) = parse(&header);
        assert_eq!(src, caller, "the client's own address");
        assert_eq!(dst, proxy.inbound[0], "the listener it called");
        let field = |kind: u8| {
            fields
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no field {kind:#x} in {fields:?}"))
        };
        assert_eq!(
            field(u8::from(Type::Authority)),
            dns_name("server").as_bytes()
        );
        assert_eq!(field(0xE0), spiffe("client").as_bytes(), "the SPIFFE ID");
        let ssl = field(u8::from(Type::SSL));
        let resumed = round == 1;
        // PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, and PP2_CLIENT_CERT_CONN on a full handshake.
        assert_eq!(ssl[0], if resumed { 0x05 } else { 0x07 }, "round {round}");
        assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verified");
        let text = String::from_utf8_lossy(&ssl[5..]);
        assert!(text.contains("TLSv1.3"), "{text}");
        assert!(text.contains("TLS_AES_"), "{text}");

        // Then the client's bytes, intact, and the app's answer goes back.
        let mut first = [0u8; 5];
        conn.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"hello");
        conn.write_all(b"world").await.unwrap();
        let mut answer = [0u8; 5];
        tls.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"world");
    }
}

/// Without the option the app gets the client's bytes and nothing else.
#[tokio::test]
async fn without_the_option_the_app_gets_only_the_clients_bytes() {
    let (app, proxy, client, _dir) = setup("").await;
    let mut tls = client
        .connect(proxy.inbound[0], &dns_name("server"))
        .await
        .unwrap();
    tls.write_all(b"hello").await.unwrap();
    let (mut conn, _) = app.accept().await.unwrap();
    let mut first = [0u8; 5];
    conn.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"hello");
}
