//! The accept loop of both servers' plaintext admin listeners (`/live`, `/ready`, `/metrics`):
//! HTTP/1.1, a bounded number of connections at once, a deadline on each request's headers.
//! What each endpoint answers is the server's own (the `service` it passes).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::accept::{Backoff, is_per_connection};

/// Admin connections served at once. The kubelet's probes and a scrape or two need a handful;
/// past the limit new connections wait in the kernel's listen queue, where they hold no file
/// descriptor, so a flood of connections to an admin port (it listens on the pod IP for probes
/// and scraping) cannot take the descriptors the server's real work needs.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a request's headers may take to arrive, and a kept-alive connection may stay idle
/// before its next request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves admin connections on `listener`, at most `limit` at once, each with the service
/// `service` makes for its client's address, until `stop` is cancelled; that also ends the
/// connections still open.
pub async fn serve<S>(
    listener: TcpListener,
    limit: usize,
    stop: CancellationToken,
    service: impl Fn(SocketAddr) -> S,
) where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit));
    let mut backoff = Backoff::default();
    loop {
        // The permit before the accept (there is one admin listener, so none is starved of it):
        // at the limit, the next connection stays in the kernel's queue.
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => {
                permit.expect("the admin semaphore is never closed")
            }
        };
        let (stream, client) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff.reset();
                    conn
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    let wait = backoff.pause();
                    tracing::warn!(error = %e, retry_in = ?wait, "admin accept failed; backing off");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        let service = service(client);
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(client.addr = %client, error = %e, "admin connection ended with an error");
                },
                () = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn send(stream: &mut TcpStream) {
        stream
            .write_all(b"GET /live HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
    }

    /// Reads one answer whose body is `live\n` (cancel-safe: nothing is read until it comes).
    async fn receive(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        let mut buf = [0u8; 512];
        while !answer.ends_with(b"\r\n\r\nlive\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, 2, stop.clone(), |_| {
            hyper::service::service_fn(|_| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"live\n"))))
            })
        }));
        // Two kept-alive connections, served, take both places.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            send(&mut c).await;
            assert!(receive(&mut c).await.starts_with("HTTP/1.1 200"));
            held.push(c);
        }
        // A third connects (into the kernel's queue) but is not served while they stay open...
        let mut third = TcpStream::connect(addr).await.unwrap();
        send(&mut third).await;
        let early = tokio::time::timeout(Duration::from_millis(300), receive(&mut third)).await;
        assert!(early.is_err(), "served past the limit: {early:?}");
        // ...and is as soon as one of them closes.
        drop(held.pop());
        let answer = tokio::time::timeout(Duration::from_secs(10), receive(&mut third))
            .await
            .expect("the place a closed connection freed is taken by the waiting one");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Stopping ends the loop and the connections still open.
        stop.cancel();
        server.await.unwrap();
        let mut rest = Vec::new();
        // (Sooner than the header deadline would close it.)
        let closed = tokio::time::timeout(HEADER_READ_TIMEOUT / 2, held[0].read_to_end(&mut rest));
        assert_eq!(closed.await.expect("closed by the stop").unwrap(), 0);
    }
}
