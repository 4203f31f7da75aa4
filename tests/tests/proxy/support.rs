//! Fixtures shared by the proxy tests (the harness holds the reusable parts).

pub use gembok_tests::pair::{Pair, unused_port};
use gembok_tests::pki::{CertDir, dns_name};
use gembok_tests::proxy::Proxy;

/// Fails when `times` (of round trips, or of connections until their first bytes) look held
/// by a kernel timer: a write the kernel keeps (`MSG_MORE`) until its probe timer, or an ACK
/// held for a write that never comes until the delayed-ACK timer, waits at least 200 ms every
/// time. Unheld, each takes well under a millisecond here and a few under heavy load; a stalled
/// machine slows some of them, not every one, so the median is judged, not the sum.
pub fn assert_not_held_by_a_kernel_timer(
    mut times: Vec<std::time::Duration>,
    what: &str,
    context: impl std::fmt::Display,
) {
    times.sort();
    assert!(
        times[times.len() / 2] < std::time::Duration::from_millis(100),
        "{what} held by a kernel timer (sorted): {times:?}\n{context}"
    );
}

/// Polls `/metrics` until the sum of `name` over samples matching `labels` equals `want`.
pub async fn wait_metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)], want: f64) {
    proxy.wait_metric(name, labels, want).await;
}

/// The app's connection to an outbound whose handshake fails: what it writes never arrives and
/// it is closed (reset) within 10 s. The reset can come before this task sees its own connect
/// complete: then connect itself reports it.
pub async fn assert_the_app_is_turned_away(outbound: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    match tokio::net::TcpStream::connect(outbound).await {
        Ok(mut app) => {
            let _ = app.write_all(b"must not arrive").await;
            let mut got = Vec::new();
            let closed = std::time::Duration::from_secs(10);
            let _ = tokio::time::timeout(closed, app.read_to_end(&mut got))
                .await
                .expect("the outbound closes the app's connection");
            assert!(got.is_empty(), "{got:?}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

/// An outbound sidecar with `dir`'s certificate routing to `server` under the name of the
/// `server` workload, with `args`; returned ready.
pub async fn outbound_to(dir: &CertDir, server: std::net::SocketAddr, args: &[&str]) -> Proxy {
    let outbound = Proxy::builder()
        .cert_dir(dir)
        .outbound(
            &server.to_string(),
            &format!(",server-name={}", dns_name("server")),
        )
        .args(args)
        .start();
    outbound.ready().await;
    outbound
}

/// What an app gets back through `outbound` for `line` from a server that answers each line
/// (`openssl s_server -rev`), without its newline; `None` when nothing comes within 10 s or the
/// connection ends first.
pub async fn reply_through(outbound: &Proxy, line: &str) -> Option<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut app = tokio::net::TcpStream::connect(outbound.outbound[0])
        .await
        .ok()?;
    app.write_all(format!("{line}\n").as_bytes()).await.ok()?;
    let mut reply = String::new();
    let mut app = BufReader::new(&mut app);
    let read = app.read_line(&mut reply);
    match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
        Ok(Ok(n)) if n > 0 => Some(reply.trim_end_matches('\n').to_owned()),
        _ => None,
    }
}
