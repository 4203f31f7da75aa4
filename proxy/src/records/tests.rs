//! The record layer over real loopback sockets: a server connection handed over from
//! tokio-rustls to a [`RecordStream`], and a tokio-rustls client on the other end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Counter;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::ktls::keys::capturing;
use crate::ktls::record::{Mode, RecordAligned};
use crate::post_handshake::{
    ALERT, CLOSE_NOTIFY_ALERT, HANDSHAKE, KEY_UPDATE_NOT_REQUESTED, USER_CANCELED, fatal_alert,
};
use crate::test_tls::{configs, finished_with_first_record};
use key::tests::{sealed, twin_keys};

type Client = tokio_rustls::client::TlsStream<TcpStream>;
type SansIoClient = (rustls::ClientConnection, std::net::TcpStream);

struct Counts {
    rx: Arc<AtomicU64>,
    tx: Arc<AtomicU64>,
}

impl Counts {
    fn new() -> (Self, KeyUpdates) {
        let (rx, tx) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let updates = KeyUpdates {
            rx: Counter::from_arc(rx.clone()),
            tx: Counter::from_arc(tx.clone()),
        };
        (Self { rx, tx }, updates)
    }
}

/// The server side of a connection to the client that `start_client(config, address)` starts:
/// handshake through bounded reads, then handed over to a [`RecordStream`]. `record_limit`
/// lowers our sending key's budget.
async fn taken_over<C>(
    start_client: impl FnOnce(Arc<rustls::ClientConfig>, std::net::SocketAddr) -> JoinHandle<C>,
    record_limit: Option<u64>,
) -> (RecordStream, C, Counts) {
    let provider = crate::tls::provider(Provider::AwsLcRs, Provider::Ring, false);
    let (server, client) = configs(provider.clone(), provider.cipher_suites[0]);
    let (server, secrets) = capturing(&server);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = start_client(client, listener.local_addr().unwrap());
    let (tcp, _) = listener.accept().await.unwrap();
    let tls = TlsAcceptor::from(server)
        .accept(RecordAligned::new(tcp, Mode::Bounded))
        .await
        .unwrap();
    let client = client.await.unwrap();
    let layer = Layer {
        library: Provider::Ring,
        record_limit,
        buffers: BufferPolicy::default(),
    };
    let (counts, updates) = Counts::new();
    match handover(Box::new(tls), &layer, Some(&secrets), updates).await {
        Handover::Taken(stream) => (*stream, client, counts),
        Handover::Kept(_, reason) => panic!("kept by rustls: {reason}"),
        Handover::Failed(e, reason) => panic!("{reason}: {e}"),
    }
}

/// A connected pair with a tokio-rustls client; `early` is written by the client right after
/// its handshake, before the server hands over.
async fn pair(early: &[u8], record_limit: Option<u64>) -> (RecordStream, Client, Counts) {
    let early = early.to_vec();
    let client = |config, addr| {
        tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("server.test").unwrap();
            let mut tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
            tls.write_all(&early).await.unwrap();
            tls.flush().await.unwrap();
            tls
        })
    };
    taken_over(client, record_limit).await
}

/// A stuck transfer fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after 30 s"))
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(seed) >> 3) as u8)
        .collect()
}

#[tokio::test]
async fn bytes_cross_intact_both_ways_and_close_notify_is_eof() {
    let (mut ours, theirs, _) = pair(b"", None).await;
    let up = pattern(3 << 20, 2654435761);
    let down = pattern(3 << 20, 40503);
    let (up2, down2) = (up.clone(), down.clone());
    let peer = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(theirs);
        let writer = tokio::spawn(async move {
            w.write_all(&up2).await.unwrap();
            w.shutdown().await.unwrap(); // close_notify
            w
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap(); // our close_notify: a clean EOF
        writer.await.unwrap();
        got
    });
    let mut got = Vec::new();
    let (mut r, mut w) = tokio::io::split(&mut ours);
    let read = async {
        r.read_to_end(&mut got).await.unwrap();
    };
    let write = async {
        w.write_all(&down).await.unwrap();
        w.shutdown().await.unwrap();
    };
    within("both directions", async { tokio::join!(read, write) }).await;
    assert!(
        got == up,
        "peer → us: {} of {} bytes, or changed",
        got.len(),
        up.len()
    );
    let theirs_got = within("the peer", peer).await.unwrap();
    assert!(theirs_got == down2, "us → peer: {} bytes", theirs_got.len());
}

#[tokio::test]
async fn data_sent_with_the_last_handshake_flight_is_not_lost() {
    let early = pattern(100_000, 77);
    let (mut ours, _theirs, _) = pair(&early, None).await;
    let mut got = vec![0; early.len()];
    within("the early data", ours.read_exact(&mut got))
        .await
        .unwrap();
    assert!(got == early);
}

/// A server connection whose client sent its Finished and first record in one write, so the
/// record came over in the handshake's read-ahead buffer. The client (sans-IO rustls on a
/// blocking socket) is returned to keep the connection open.
async fn coalesced(first: &'static [u8]) -> (RecordStream, SansIoClient) {
    let client = |config, addr| {
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let (tls, mut tcp, wire) = finished_with_first_record(config, addr, first);
            tcp.write_all(&wire).unwrap();
            (tls, tcp)
        })
    };
    let (ours, client, _) = taken_over(client, None).await;
    (ours, client)
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer_once_the_handshake_read_ahead_is_used_up() {
    let (mut ours, _client) = coalesced(b"hello").await;
    assert!(
        ours.held() > 0,
        "the record did not come in the read-ahead buffer"
    );
    let mut got = [0; 5];
    within("the first record", ours.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"hello");
    // Nothing more was sent: the stream waits, and holds no buffer meanwhile.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(ours.poll_fill(&mut cx).is_pending());
    assert_eq!(ours.held(), 0, "an idle connection kept its buffer");
}

#[tokio::test]
async fn an_app_gone_quiet_leaves_the_pump_holding_no_slab() {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use crate::forward::Pump;
    let (ours, mut client, _) = pair(b"", None).await;
    let mut ours = Box::new(ours);
    let (mut app_side, mut app) = crate::test_tcp::connected().await;
    let counter = Counter::noop();
    let mut pump = AppToRecords::new(BufferPolicy::default(), &counter);

    // A short request goes through (its read is short, so tokio takes the app for drained)...
    app_side.write_all(b"request").await.unwrap();
    let mut got = [0; 7];
    let read = client.read_exact(&mut got);
    tokio::pin!(read);
    within(
        "the request",
        std::future::poll_fn(|cx| {
            if let Poll::Ready(end) = pump.poll_pump(cx, Pin::new(&mut app), Pin::new(&mut ours)) {
                panic!("the pump ended: {end:?}");
            }
            read.as_mut().poll(cx)
        }),
    )
    .await
    .unwrap();
    assert_eq!(&got, b"request");
    // ...and while the app says nothing more, the connection holds no slab.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(
        pump.poll_pump(&mut cx, Pin::new(&mut app), Pin::new(&mut ours))
            .is_pending()
    );
    // `unsent()` is "holds a slab" (given back once its records are written).
    assert!(!pump.unsent(), "an idle connection kept its slab");
}

#[tokio::test]
async fn the_peers_key_update_is_followed_and_answered() {
    let (mut ours, mut theirs, counts) = pair(b"", None).await;
    theirs.get_mut().1.refresh_traffic_keys().unwrap(); // update_requested
    theirs.write_all(b"after their update").await.unwrap();
    theirs.flush().await.unwrap();
    let mut got = [0u8; 18];
    within("their data", ours.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"after their update");
    assert_eq!(counts.rx.load(Ordering::Relaxed), 1);
    // Asked for: our next record goes under our next key, which rustls must now expect.
    ours.write_all(b"after ours").await.unwrap();
    ours.flush().await.unwrap();
    let mut got = [0u8; 10];
    within("our data", theirs.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"after ours");
    assert_eq!(counts.tx.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn our_key_is_rotated_at_the_record_budget() {
    let (mut ours, mut theirs, counts) = pair(b"", Some(8)).await;
    let data = pattern(1 << 20, 31); // 64 full records: at least 7 rotations with 8 per key
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        ours.write_all(&sent).await.unwrap();
        ours.flush().await.unwrap();
        ours
    });
    let mut got = vec![0; data.len()];
    within("our data", theirs.read_exact(&mut got))
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(got == data);
    assert!(counts.tx.load(Ordering::Relaxed) >= 7, "{:?}", counts.tx);
}

#[tokio::test]
async fn a_forged_record_ends_the_connection_with_bad_record_mac_and_an_alert() {
    let (mut ours, theirs, _) = pair(b"", None).await;
    // Under the client's rustls, write a record it did not seal.
    let (mut tcp, _) = theirs.into_inner();
    let mut forged = key::header(40).to_vec();
    forged.extend([0x55; 40]);
    tcp.write_all(&forged).await.unwrap();
    let mut buf = [0u8; 16];
    let e = within("the error", ours.read(&mut buf)).await.unwrap_err();
    let control = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<stream::ControlError>());
    let control = control.unwrap_or_else(|| panic!("{e}"));
    assert_eq!(control.reason(), "bad_record_mac");
    assert_eq!(control.alert(), Some(20));
    ours.abort(20).await.unwrap();
    // The peer reads its session ticket, then a protected alert record (a two-byte alert), then
    // EOF.
    let mut rest = Vec::new();
    within("the alert", tcp.read_to_end(&mut rest))
        .await
        .unwrap();
    let ticket = key::record_len(&rest).unwrap();
    let alert = &rest[ticket..];
    assert_eq!(alert.len(), key::HEADER + 2 + 1 + key::TAG, "{rest:?}");
    assert_eq!(alert[0], key::APPLICATION_DATA);
}

#[tokio::test]
async fn a_tcp_end_without_close_notify_is_a_truncation() {
    let (mut ours, theirs, _) = pair(b"", None).await;
    let (mut tcp, _) = theirs.into_inner();
    tcp.shutdown().await.unwrap(); // FIN, no close_notify
    let mut buf = [0u8; 16];
    let e = within("the truncation", ours.read(&mut buf))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

/// A stream on a loopback socket whose peer seals records by hand (with the twin of its
/// receiving key, [`twin_keys`]): for what rustls never sends.
async fn hand_sealed() -> (RecordStream, TcpStream) {
    let (peer, tcp) = crate::test_tcp::connected().await;
    let ((tx, _), (rx, _)) = (twin_keys(), twin_keys());
    let ours = RecordStream::new(stream::Start {
        tcp,
        library: Provider::AwsLcRs,
        cipher: Cipher::Aes128Gcm,
        tx,
        rx,
        early: Vec::new(),
        unread: bytes::BytesMut::new(),
        rekey: None,
        record_budget: 1 << 20,
        buffers: BufferPolicy::default(),
        key_updates: KeyUpdates::default(),
        is_server: false,
    });
    (ours, peer)
}

/// A session ticket (type 4) of 300 bytes.
fn ticket() -> Vec<u8> {
    let mut ticket = vec![4, 0, 1, 44];
    ticket.extend(pattern(300, 7));
    ticket
}

#[tokio::test]
async fn a_session_ticket_split_across_records_is_joined_and_skipped() {
    let (mut ours, mut peer) = hand_sealed().await;
    let (mut key, _) = twin_keys();
    let ticket = ticket();
    let wire = [
        sealed(&mut key, HANDSHAKE, &ticket[..2]),
        sealed(&mut key, HANDSHAKE, &ticket[2..100]),
        sealed(&mut key, HANDSHAKE, &ticket[100..]),
        sealed(&mut key, key::APPLICATION_DATA, b"after the ticket"),
    ]
    .concat();
    peer.write_all(&wire).await.unwrap();
    let mut got = [0; 16];
    within("the data", ours.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"after the ticket");
}

/// user_canceled is the one TLS 1.3 alert besides close_notify that does not end a connection
/// by itself (RFC 8446 §6.1): the peer's close_notify follows, and that is a clean end.
#[tokio::test]
async fn user_canceled_then_close_notify_is_a_clean_end() {
    let (mut ours, mut peer) = hand_sealed().await;
    let (mut key, _) = twin_keys();
    let wire = [
        sealed(&mut key, key::APPLICATION_DATA, b"last words"),
        sealed(&mut key, ALERT, &[1, USER_CANCELED]),
        sealed(&mut key, ALERT, &CLOSE_NOTIFY_ALERT),
    ]
    .concat();
    peer.write_all(&wire).await.unwrap();
    let mut got = Vec::new();
    within("the end", ours.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"last words");
    // Any other alert is the end, with an error.
    let (mut key, _) = twin_keys();
    let wire = sealed(&mut key, ALERT, &fatal_alert(USER_CANCELED + 1));
    assert_eq!(ended_by(&wire).await, ("alert", None));
}

/// The error `wire` ends our stream with.
async fn ended_by(wire: &[u8]) -> (&'static str, Option<u8>) {
    let (mut ours, mut peer) = hand_sealed().await;
    peer.write_all(wire).await.unwrap();
    let e = within("the error", ours.read(&mut [0; 64]))
        .await
        .unwrap_err();
    let control = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<stream::ControlError>());
    let control = control.unwrap_or_else(|| panic!("{e}"));
    (control.reason(), control.alert())
}

#[tokio::test]
async fn another_record_inside_a_split_message_ends_the_connection() {
    let ticket = ticket();
    for (other, content) in [
        (key::APPLICATION_DATA, &b"data"[..]),
        (ALERT, &CLOSE_NOTIFY_ALERT[..]),
    ] {
        let (mut key, _) = twin_keys();
        let wire = [
            sealed(&mut key, HANDSHAKE, &ticket[..50]),
            sealed(&mut key, other, content),
        ]
        .concat();
        assert_eq!(
            ended_by(&wire).await,
            ("unexpected_record", Some(10)),
            "record type {other}"
        );
    }
}

#[tokio::test]
async fn a_key_update_that_does_not_end_its_record_ends_the_connection() {
    let message = [&KEY_UPDATE_NOT_REQUESTED[..], &ticket()].concat();
    let wire = sealed(&mut twin_keys().0, HANDSHAKE, &message);
    assert_eq!(ended_by(&wire).await, ("unexpected_record", Some(10)));
}
