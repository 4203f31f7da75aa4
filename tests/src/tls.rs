//! A rustls client for talking TLS straight to an inbound listener.

use std::net::SocketAddr;
use std::sync::Arc;

use gembok_certs_dev::Leaf;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Who the client is and what it accepts.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
}

impl Client {
    /// Trusts `root_pem`, presents `leaf` (or nothing), TLS 1.3 and 1.2 allowed unless
    /// `tls12_only`.
    pub fn new(root_pem: &str, leaf: Option<&Leaf>, tls12_only: bool) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(root_pem.as_bytes())
            .expect("root PEM");
        roots.add(der).expect("root cert");
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots);
        let config = match leaf {
            Some(l) => builder
                .with_client_auth_cert(l.chain_der(), l.key_der())
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        Self {
            config: Arc::new(config),
        }
    }

    /// Connects and completes the handshake.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(server_name.to_owned()).expect("server name");
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }

    /// Completes a handshake over blocking I/O with `first` sent in the same write as the
    /// client's last flight (its Finished), as a sidecar that held its Finished for the app's
    /// first request does.
    pub fn handshake_sending(
        &self,
        addr: SocketAddr,
        server_name: &str,
        first: &[u8],
    ) -> std::io::Result<(rustls::ClientConnection, std::net::TcpStream)> {
        use std::io::Write;
        self.handshake_then(addr, server_name, |tls| tls.writer().write_all(first))
    }

    /// Completes a handshake over blocking I/O, then half-closes TCP right behind the client's
    /// Finished: with `close_notify` in the same write (a connection closed before any data,
    /// its last records arriving together), or without one (a truncation).
    pub fn handshake_then_fin(
        &self,
        addr: SocketAddr,
        server_name: &str,
        close_notify: bool,
    ) -> std::io::Result<(rustls::ClientConnection, std::net::TcpStream)> {
        let (tls, tcp) = self.handshake_then(addr, server_name, |tls| {
            if close_notify {
                tls.send_close_notify();
            }
            Ok(())
        })?;
        tcp.shutdown(std::net::Shutdown::Write)?;
        Ok((tls, tcp))
    }

    /// The handshake, `last` run on the connection while its last flight is queued (not yet
    /// written), then everything queued written at once.
    fn handshake_then(
        &self,
        addr: SocketAddr,
        server_name: &str,
        last: impl FnOnce(&mut rustls::ClientConnection) -> std::io::Result<()>,
    ) -> std::io::Result<(rustls::ClientConnection, std::net::TcpStream)> {
        let name = ServerName::try_from(server_name.to_owned()).expect("server name");
        let mut tls = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(std::io::Error::other)?;
        let mut tcp = std::net::TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        while tls.is_handshaking() {
            while tls.wants_write() {
                tls.write_tls(&mut tcp)?;
            }
            if tls.read_tls(&mut tcp)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            tls.process_new_packets().map_err(std::io::Error::other)?;
        }
        last(&mut tls)?;
        // One write_tls call can stop at a record; gathered, they leave in one write.
        let mut queued = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut queued)?;
        }
        std::io::Write::write_all(&mut tcp, &queued)?;
        Ok((tls, tcp))
    }
}

/// A record no TLS stack would send: an application-data header claiming `len` bytes, followed
/// by `body` (random bytes cannot authenticate under any key).
pub fn forged_record(len: u16, body: &[u8]) -> Vec<u8> {
    let mut record = vec![23, 3, 3];
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(body);
    record
}

/// What a forged record did to an inbound connection.
#[derive(Debug)]
pub struct Forged {
    /// The alert the client received for it (`None`: the connection ended without one).
    pub alert: Option<rustls::AlertDescription>,
    /// The client's read error, for failure messages.
    pub client_error: String,
    /// How the app's side ended: `Ok` with what it read before a clean end, or the error kind
    /// (`TimedOut`: still open after 10 s).
    pub app: Result<Vec<u8>, std::io::ErrorKind>,
}

impl Forged {
    /// Asserts that the client got `alert` and the app a reset (a forged record must pass for
    /// neither a clean end nor a network fault); `context` goes into the failure message.
    pub fn assert_refused(&self, alert: rustls::AlertDescription, context: &str) {
        assert_eq!(self.alert, Some(alert), "{context}: {self:?}");
        assert_eq!(
            self.app,
            Err(std::io::ErrorKind::ConnectionReset),
            "{context}: the app must see a reset"
        );
    }
}

/// Connects `client` to the inbound `listener` (whose app listens on `app`), sends `hello`
/// through it, then writes `forged` straight to the socket under rustls, and reports what
/// came back to the client and what the app saw.
pub async fn send_forged(
    client: &Client,
    listener: SocketAddr,
    server_name: &str,
    app: &tokio::net::TcpListener,
    forged: &[u8],
) -> Forged {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = client
        .connect(listener, server_name)
        .await
        .expect("handshake");
    tls.write_all(b"hello").await.unwrap();
    tls.flush().await.unwrap();
    let (mut conn, _) = app.accept().await.unwrap();
    let mut got = vec![0u8; 5];
    conn.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"hello");
    // Past rustls, which has nothing queued: the forged bytes follow its last record.
    tls.get_mut().0.write_all(forged).await.unwrap();
    let within = std::time::Duration::from_secs(10);
    let mut buf = [0u8; 64];
    let client_error = match tokio::time::timeout(within, tls.read(&mut buf)).await {
        Err(_) => std::io::Error::other(format!("no answer within {within:?}")),
        Ok(Ok(n)) => std::io::Error::other(format!("{n} bytes of data, not an alert")),
        Ok(Err(e)) => e,
    };
    let alert = client_error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .and_then(|e| match e {
            rustls::Error::AlertReceived(a) => Some(*a),
            _ => None,
        });
    let mut rest = Vec::new();
    let app = match tokio::time::timeout(within, conn.read_to_end(&mut rest)).await {
        Err(_) => Err(std::io::ErrorKind::TimedOut), // still open
        Ok(read) => read.map(|_| rest).map_err(|e| e.kind()),
    };
    Forged {
        alert,
        client_error: client_error.to_string(),
        app,
    }
}
