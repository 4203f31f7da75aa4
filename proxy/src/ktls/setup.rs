//! Handing a connection from rustls to the kernel, or keeping it in user space.
//!
//! The `tls` ULP is attached before the handshake ([`prepare`]): the kernel only attaches it to
//! an established socket, and a fast peer's FIN can arrive before the handshake ends (the socket
//! is then in CLOSE_WAIT and the attach fails with ENOTCONN). Until keys are installed the ULP
//! passes bytes through unchanged, so the handshake and a user-space fallback are unaffected.
//!
//! After the handshake, everything that can fail while rustls could still continue is checked
//! first: the negotiated cipher must be one the probe saw the kernel accept, and rustls must have
//! nothing left to send and must have stopped reading at a record boundary (a record its reads
//! had started is read to its end first, for up to a second). Only then are the
//! secrets extracted (which consumes the rustls connection) and installed for both directions.
//! That taking-apart of rustls ([`release`], [`traffic_key`]) is shared with gembok's own record
//! layer (`crate::records`), and so is [`Handover`], what became of the attempt.
//! Plaintext rustls had already decrypted (none, with record-aligned reads) is served first by
//! the [`KtlsStream`]. On a TLS 1.3 connection whose traffic secrets were captured (see
//! [`super::keys`]) and a kernel that can be rekeyed, the stream also gets the key schedules it
//! needs to follow KeyUpdates.

use std::io::{self, Read};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::socket::{setsockopt, sockopt};
use rustls::CipherSuite;
use rustls::crypto::cipher::NONCE_LEN;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::keys::{Rekey, SecretLog};
use super::record::{Mode, PollReader};
use super::stream::KeyUpdates;
use super::{Cipher, Kernel, KtlsStream, RecordAligned, Version};

/// A completed TLS connection that may be handed to the kernel.
pub trait TlsSession: AsyncRead + AsyncWrite + Unpin + Send + Sized {
    fn tcp(&self) -> &TcpStream;
    fn common(&self) -> &rustls::CommonState;
    /// Whether [`prepare`] attached the ULP (reads are record-aligned exactly then).
    fn ulp_attached(&self) -> bool;
    /// Whether the handshake's reads stopped exactly at a record boundary.
    fn at_boundary(&self) -> bool;
    /// Whether they stopped within a record, its rest yet to be read.
    fn mid_record(&self) -> bool;
    /// Reads the rest of that record into rustls (and processes it); ready at its end.
    fn poll_finish_record(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Whether rustls has already read the peer's close_notify (tokio-rustls reads on after
    /// the handshake while rustls has no plaintext, so an empty connection's close_notify can
    /// arrive with the peer's Finished).
    fn peer_has_closed(&mut self) -> bool;
    /// Turns record-aligned or bounded reads off (the connection stays with rustls).
    fn release(&mut self);
    /// How many encrypted bytes rustls may queue before a write waits.
    fn set_send_queue(&mut self, bytes: usize);
    /// The socket, what was read from it beyond what rustls was served, and rustls.
    fn into_parts(self) -> (TcpStream, BytesMut, rustls::Connection);
}

macro_rules! tls_session {
    ($stream:ty) => {
        impl TlsSession for $stream {
            fn tcp(&self) -> &TcpStream {
                self.get_ref().0.tcp()
            }
            fn common(&self) -> &rustls::CommonState {
                self.get_ref().1
            }
            fn ulp_attached(&self) -> bool {
                self.get_ref().0.aligned()
            }
            fn at_boundary(&self) -> bool {
                self.get_ref().0.at_boundary()
            }
            fn mid_record(&self) -> bool {
                self.get_ref().0.mid_record()
            }
            fn poll_finish_record(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let (io, conn) = self.get_mut();
                while io.mid_record() {
                    match conn.read_tls(&mut PollReader {
                        io: &mut *io,
                        cx: &mut *cx,
                    }) {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                        Ok(_) => {
                            if let Err(e) = conn.process_new_packets() {
                                return Poll::Ready(Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    e,
                                )));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Poll::Ready(Ok(()))
            }
            fn peer_has_closed(&mut self) -> bool {
                // Nothing new to process: this only reads the state. (An error here is the
                // connection's, and the hand-over's own steps report it.)
                self.get_mut()
                    .1
                    .process_new_packets()
                    .is_ok_and(|state| state.peer_has_closed())
            }
            fn release(&mut self) {
                self.get_mut().0.release()
            }
            fn set_send_queue(&mut self, bytes: usize) {
                self.get_mut().1.set_buffer_limit(Some(bytes))
            }
            fn into_parts(self) -> (TcpStream, BytesMut, rustls::Connection) {
                let (io, conn) = self.into_inner();
                let (tcp, ahead) = io.into_parts();
                (tcp, ahead, conn.into())
            }
        }
    };
}

tls_session!(tokio_rustls::server::TlsStream<RecordAligned<TcpStream>>);
tls_session!(tokio_rustls::client::TlsStream<RecordAligned<TcpStream>>);

/// Connections keep their TLS state boxed (see `inbound.rs`).
impl<T: TlsSession> TlsSession for Box<T> {
    fn tcp(&self) -> &TcpStream {
        (**self).tcp()
    }
    fn common(&self) -> &rustls::CommonState {
        (**self).common()
    }
    fn ulp_attached(&self) -> bool {
        (**self).ulp_attached()
    }
    fn at_boundary(&self) -> bool {
        (**self).at_boundary()
    }
    fn peer_has_closed(&mut self) -> bool {
        (**self).peer_has_closed()
    }
    fn mid_record(&self) -> bool {
        (**self).mid_record()
    }
    fn poll_finish_record(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_finish_record(cx)
    }
    fn release(&mut self) {
        (**self).release()
    }
    fn set_send_queue(&mut self, bytes: usize) {
        (**self).set_send_queue(bytes)
    }
    fn into_parts(self) -> (TcpStream, BytesMut, rustls::Connection) {
        (*self).into_parts()
    }
}

/// What a connection that may go to the kernel brings to the hand-over (see
/// [`super::keys::handoff`]).
pub struct Handoff<'a> {
    pub kernel: &'a Kernel,
    /// The connection's captured traffic secrets (only when the kernel can be rekeyed).
    pub secrets: Option<std::sync::Arc<SecretLog>>,
}

/// What became of a connection whose records something wanted to take from rustls (the
/// kernel, gembok's record layer, or [`release`] for either).
// Taken is returned once per connection and taken apart at once: boxing it would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum Handover<T, S> {
    /// Taken: the kernel's stream, gembok's record stream, or what rustls gave up.
    Taken(T),
    /// rustls keeps the connection (reads still bounded: the caller releases them). The reason
    /// is a metric label.
    Kept(S, &'static str),
    /// The hand-over failed after rustls gave the connection up: it can only be closed.
    Failed(io::Error, &'static str),
}

/// Before the handshake: attaches the `tls` ULP when kTLS is enabled, and aligns reads exactly
/// when it attached (a connection whose ULP did not attach stays in user space). Otherwise reads
/// are bounded by records when gembok's own record layer may take over (`records`), free if not.
pub fn prepare(tcp: TcpStream, ktls: bool, records: bool) -> RecordAligned<TcpStream> {
    let attached = ktls
        && match setsockopt(&tcp, sockopt::TcpUlp::default(), b"tls") {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot attach the tls ULP; this connection stays in user space");
                false
            }
        };
    let mode = match (attached, records) {
        (true, _) => Mode::Aligned,
        (false, true) => Mode::Bounded,
        (false, false) => Mode::Free,
    };
    RecordAligned::new(tcp, mode)
}

/// How long [`release`] waits for the rest of a record the handshake's reads started. Within it
/// the other direction waits too. Past it, or when the peer closes or the record does not open,
/// the connection stays with rustls (reason `partial_record`), whose next read reports whatever
/// went wrong.
const FINISH_RECORD: Duration = Duration::from_secs(1);

/// A connection rustls has given up: its socket, what it left, and its keys.
pub struct Released {
    pub tcp: TcpStream,
    /// Bytes read from the socket that rustls was never served (bounded reads only).
    pub unread: BytesMut,
    /// Plaintext rustls had decrypted but not handed out, to be served first.
    pub early: Vec<u8>,
    pub suite: Option<SupportedCipherSuite>,
    pub is_server: bool,
    pub secrets: ExtractedSecrets,
}

/// Takes a connection's record layer from rustls, for the kernel or gembok's own: first what
/// can fail while rustls could still continue (flush what it queued, such as session tickets,
/// which must be on the wire before the sequence numbers move; nothing left to send; reads
/// stopped at a record boundary), then drains its decrypted plaintext and extracts the secrets,
/// which consumes it.
pub async fn release<S: TlsSession>(mut tls: S) -> Handover<Released, S> {
    // While rustls wants to read, tokio-rustls reads on after the handshake's last record, and
    // may have stopped in the middle of the peer's next one (its first request, a session
    // ticket) when the rest had not arrived yet. That rest is on its way: take it, rather than
    // leave the connection in user space for good.
    if tls.mid_record() {
        let finish = std::future::poll_fn(|cx| tls.poll_finish_record(cx));
        if !matches!(
            tokio::time::timeout(FINISH_RECORD, finish).await,
            Ok(Ok(()))
        ) {
            return Handover::Kept(tls, "partial_record");
        }
    }
    // Neither the kernel's record layer nor ours can be told that the close_notify was read
    // already; rustls can: it answers EOF. Left with it, the connection ends cleanly instead of
    // as a truncation (the next read would find only the TCP FIN).
    if tls.peer_has_closed() {
        return Handover::Kept(tls, "peer_closed");
    }
    if let Err(e) = tls.flush().await {
        return Handover::Failed(e, "flush");
    }
    if tls.common().wants_write() || !tls.at_boundary() {
        return Handover::Kept(tls, "buffered_records");
    }
    let (tcp, unread, mut conn) = tls.into_parts();
    let suite = conn.negotiated_cipher_suite();
    let is_server = matches!(conn, rustls::Connection::Server(_));
    let mut early = Vec::new();
    // WouldBlock: all of it taken, the connection open. UnexpectedEof: rustls saw the TCP FIN
    // with no close_notify; the new record layer finds that FIN again on its first read and
    // ends the connection as the truncation it is, after the plaintext taken here.
    if let Err(e) = conn.reader().read_to_end(&mut early)
        && !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof
        )
    {
        return Handover::Failed(e, "pending_plaintext");
    }
    match conn.dangerous_extract_secrets() {
        Ok(secrets) => Handover::Taken(Released {
            tcp,
            unread,
            early,
            suite,
            is_server,
            secrets,
        }),
        Err(e) => Handover::Failed(io::Error::other(e), "extract_secrets"),
    }
}

/// Hands `tls` to the kernel if it can, else gives it back for user space.
pub async fn handover<S: TlsSession>(
    tls: S,
    handoff: &Handoff<'_>,
    key_updates: KeyUpdates,
) -> Handover<KtlsStream, S> {
    let kernel = handoff.kernel;
    let support = &kernel.support;
    if !tls.ulp_attached() {
        return Handover::Kept(tls, "ulp");
    }
    let Some((cipher, version)) = negotiated(tls.common()) else {
        return Handover::Kept(tls, "unsupported_cipher");
    };
    if !support.supports(cipher, version) {
        return Handover::Kept(tls, "unsupported_cipher");
    }
    let Released {
        tcp,
        unread,
        early,
        suite,
        is_server,
        secrets,
    } = match release(tls).await {
        Handover::Taken(released) => released,
        Handover::Kept(tls, reason) => return Handover::Kept(tls, reason),
        Handover::Failed(e, reason) => return Handover::Failed(e, reason),
    };
    debug_assert!(unread.is_empty(), "aligned reads never read ahead");
    let install =
        |opt: Direction, (seq, secrets): (u64, ConnectionTrafficSecrets)| -> io::Result<()> {
            let info = from_secrets(cipher, version, &secrets, seq)?;
            match opt {
                Direction::Tx => setsockopt(&tcp, sockopt::TcpTlsTx, &info),
                Direction::Rx => setsockopt(&tcp, sockopt::TcpTlsRx, &info),
            }
            .map_err(io::Error::from)
        };
    let rekey = match (version, suite, &handoff.secrets) {
        (Version::Tls13, Some(suite), Some(log)) if support.rekey => {
            Rekey::new(log, suite, cipher, is_server, &secrets)
        }
        _ => None,
    };
    if let Err(e) = install(Direction::Tx, secrets.tx) {
        return Handover::Failed(e, "tls_tx");
    }
    if let Err(e) = install(Direction::Rx, secrets.rx) {
        return Handover::Failed(e, "tls_rx");
    }
    Handover::Taken(KtlsStream::new(
        tcp,
        early,
        kernel.record_budget(cipher),
        rekey,
        key_updates,
        is_server,
    ))
}

enum Direction {
    Tx,
    Rx,
}

/// The cipher and version of a connection, if the kernel could take it.
pub fn negotiated(tls: &rustls::CommonState) -> Option<(Cipher, Version)> {
    let version = match tls.protocol_version()? {
        ProtocolVersion::TLSv1_3 => Version::Tls13,
        ProtocolVersion::TLSv1_2 => Version::Tls12,
        _ => return None,
    };
    let cipher = match tls.negotiated_cipher_suite()?.suite() {
        CipherSuite::TLS13_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Cipher::Aes128Gcm,
        CipherSuite::TLS13_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Cipher::Aes256Gcm,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Cipher::Chacha20Poly1305,
        _ => return None,
    };
    Some((cipher, version))
}

fn from_secrets(
    cipher: Cipher,
    version: Version,
    secrets: &ConnectionTrafficSecrets,
    seq: u64,
) -> io::Result<sockopt::TlsCryptoInfo> {
    let (key, iv) = traffic_key(cipher, secrets)?;
    Ok(crypto_info(cipher, version, key, iv, seq))
}

/// The key and IV of one direction's extracted secrets, checked against the negotiated cipher.
pub fn traffic_key(
    cipher: Cipher,
    secrets: &ConnectionTrafficSecrets,
) -> io::Result<(&[u8], &[u8; NONCE_LEN])> {
    let (key, iv, got) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (key, iv, Cipher::Aes128Gcm),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (key, iv, Cipher::Aes256Gcm),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (key, iv, Cipher::Chacha20Poly1305)
        }
        _ => {
            return Err(io::Error::other(
                "rustls extracted secrets for an unknown cipher",
            ));
        }
    };
    let (key, iv) = (key.as_ref(), iv.as_ref());
    // Some rustls versions labelled AES-256 secrets as AES-128 (rustls#1833): check the length too.
    let expected_key = if cipher == Cipher::Aes128Gcm { 16 } else { 32 };
    match iv.try_into() {
        Ok(iv) if got == cipher && key.len() == expected_key => Ok((key, iv)),
        _ => Err(io::Error::other(format!(
            "extracted secrets ({got:?}, {}-byte key) do not match the negotiated {cipher:?}",
            key.len()
        ))),
    }
}

/// The kernel's `tls12_crypto_info_*` for a key, a 12-byte IV and the next record sequence.
pub fn crypto_info(
    cipher: Cipher,
    version: Version,
    key: &[u8],
    iv: &[u8],
    seq: u64,
) -> sockopt::TlsCryptoInfo {
    let info = libc::tls_crypto_info {
        version: match version {
            Version::Tls13 => libc::TLS_1_3_VERSION,
            Version::Tls12 => libc::TLS_1_2_VERSION,
        },
        cipher_type: match cipher {
            Cipher::Aes128Gcm => libc::TLS_CIPHER_AES_GCM_128,
            Cipher::Aes256Gcm => libc::TLS_CIPHER_AES_GCM_256,
            Cipher::Chacha20Poly1305 => libc::TLS_CIPHER_CHACHA20_POLY1305,
        },
    };
    let rec_seq = seq.to_be_bytes();
    let copy = |dst: &mut [u8], src: &[u8]| dst.copy_from_slice(&src[..dst.len()]);
    match cipher {
        // The 12-byte nonce base is the 4-byte salt followed by the 8-byte IV.
        Cipher::Aes128Gcm => {
            let mut c = libc::tls12_crypto_info_aes_gcm_128 {
                info,
                iv: [0; 8],
                key: [0; 16],
                salt: [0; 4],
                rec_seq,
            };
            copy(&mut c.salt, &iv[..4]);
            copy(&mut c.iv, &iv[4..]);
            copy(&mut c.key, key);
            sockopt::TlsCryptoInfo::Aes128Gcm(c)
        }
        Cipher::Aes256Gcm => {
            let mut c = libc::tls12_crypto_info_aes_gcm_256 {
                info,
                iv: [0; 8],
                key: [0; 32],
                salt: [0; 4],
                rec_seq,
            };
            copy(&mut c.salt, &iv[..4]);
            copy(&mut c.iv, &iv[4..]);
            copy(&mut c.key, key);
            sockopt::TlsCryptoInfo::Aes256Gcm(c)
        }
        Cipher::Chacha20Poly1305 => {
            let mut c = libc::tls12_crypto_info_chacha20_poly1305 {
                info,
                iv: [0; 12],
                key: [0; 32],
                salt: [],
                rec_seq,
            };
            copy(&mut c.iv, iv);
            copy(&mut c.key, key);
            sockopt::TlsCryptoInfo::Chacha20Poly1305(c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_splits_the_nonce_base_into_salt_and_iv() {
        let iv: Vec<u8> = (0..12).collect();
        let key = [7u8; 16];
        let sockopt::TlsCryptoInfo::Aes128Gcm(c) =
            crypto_info(Cipher::Aes128Gcm, Version::Tls13, &key, &iv, 0x0102)
        else {
            panic!("wrong variant")
        };
        assert_eq!(c.info.version, 0x0304);
        assert_eq!(c.info.cipher_type, 51);
        assert_eq!(c.salt, [0, 1, 2, 3]);
        assert_eq!(c.iv, [4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(c.key, key);
        assert_eq!(c.rec_seq, [0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn chacha_takes_the_whole_nonce_as_iv() {
        let iv: Vec<u8> = (0..12).collect();
        let sockopt::TlsCryptoInfo::Chacha20Poly1305(c) =
            crypto_info(Cipher::Chacha20Poly1305, Version::Tls12, &[1; 32], &iv, 5)
        else {
            panic!("wrong variant")
        };
        assert_eq!(c.info.version, 0x0303);
        assert_eq!(c.info.cipher_type, 54);
        assert_eq!(c.iv.to_vec(), iv);
        assert_eq!(c.rec_seq[7], 5);
    }

    const REQUEST: &[u8] = b"the first request, sealed behind the client's Finished";

    /// A server handshake on record-aligned reads whose client sends its Finished and first
    /// request in one write but the request's record without its last 10 bytes; the server's
    /// handshake has then ended in the middle of that record. Returns the server's stream, the
    /// client's socket (to send `rest` on) and the rest.
    async fn ended_mid_record() -> (
        tokio_rustls::server::TlsStream<RecordAligned<TcpStream>>,
        TcpStream,
        Vec<u8>,
    ) {
        let provider = crate::tls::provider(
            crate::config::Provider::AwsLcRs,
            crate::config::Provider::AwsLcRs,
            false,
        );
        let suite = provider.cipher_suites[0];
        let (server, client) = crate::test_tls::configs(provider, suite);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let (_, mut tcp, mut wire) =
                crate::test_tls::finished_with_first_record(client, addr, REQUEST);
            let rest = wire.split_off(wire.len() - 10);
            tcp.write_all(&wire).unwrap();
            tcp.set_nonblocking(true).unwrap();
            (tcp, rest)
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let server = tokio_rustls::TlsAcceptor::from(server)
            .accept(RecordAligned::new(tcp, Mode::Aligned))
            .await
            .unwrap();
        let (tcp, rest) = client.await.unwrap();
        assert!(
            server.mid_record(),
            "the server's handshake read all the client sent"
        );
        (server, TcpStream::from_std(tcp).unwrap(), rest)
    }

    /// The rest of a record the handshake's reads started is read before the hand-over, and its
    /// plaintext served first: the connection is not left in user space for it.
    #[tokio::test]
    async fn a_record_the_handshake_started_is_finished_before_the_hand_over() {
        let (server, mut client, rest) = ended_mid_record().await;
        let released = tokio::spawn(release(server));
        client.write_all(&rest).await.unwrap();
        match released.await.unwrap() {
            Handover::Taken(released) => {
                assert_eq!(released.early, REQUEST);
                assert!(released.unread.is_empty());
            }
            Handover::Kept(_, reason) => panic!("kept in user space: {reason}"),
            Handover::Failed(e, reason) => panic!("failed: {reason}: {e}"),
        }
    }

    /// A peer that never sends the rest keeps its connection with rustls, intact: what arrives
    /// later is read there.
    #[tokio::test(start_paused = true)]
    async fn a_record_whose_rest_does_not_come_leaves_the_connection_with_rustls() {
        use tokio::io::AsyncReadExt;
        let (server, mut client, rest) = ended_mid_record().await;
        let mut server = match release(server).await {
            Handover::Kept(server, reason) => {
                assert_eq!(reason, "partial_record");
                server
            }
            Handover::Taken(_) => panic!("taken without the record's end"),
            Handover::Failed(e, reason) => panic!("failed: {reason}: {e}"),
        };
        server.release();
        client.write_all(&rest).await.unwrap();
        let mut got = vec![0u8; REQUEST.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, REQUEST);
    }
}
