//! The two pumps of gembok's record layer; neither copies bytes in user space.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use metrics::Counter;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::RecordStream;
use super::key::{HEADER, MAX_PLAINTEXT, MAX_SEALED, TAG};
use super::stream::BATCH;
use crate::forward::{BufferPolicy, Failed, Pump};
use crate::reads;

/// Peer → app without a user-space copy: the content of opened records is written to the app
/// from the buffer it was decrypted in, many records per `writev`.
pub struct RecordsToApp<'a> {
    carried: u64,
    counter: &'a Counter,
    eof: bool,
    moved: bool,
    /// Opened bytes are waiting for the app to take them.
    unsent: bool,
}

impl<'a> RecordsToApp<'a> {
    pub fn new(counter: &'a Counter) -> Self {
        Self {
            carried: 0,
            counter,
            eof: false,
            moved: false,
            unsent: false,
        }
    }
}

/// Slices per `writev`: a batch of full records, plus room for small ones.
const SLICES: usize = 4 * BATCH;

impl<W: AsyncWrite + ?Sized> Pump<Box<RecordStream>, W> for RecordsToApp<'_> {
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        peer: Pin<&mut Box<RecordStream>>,
        mut app: Pin<&mut W>,
    ) -> Poll<Result<(), Failed>> {
        let peer = &mut **peer.get_mut();
        loop {
            if !self.eof {
                self.eof = !ready!(peer.poll_fill(cx)).map_err(Failed::Read)?;
            }
            if self.eof {
                ready!(app.as_mut().poll_shutdown(cx)).map_err(Failed::Write)?;
                return Poll::Ready(Ok(()));
            }
            let n = {
                let mut slices = [IoSlice::new(&[]); SLICES];
                let count = peer.readable(&mut slices);
                let written = app.as_mut().poll_write_vectored(cx, &slices[..count]);
                self.unsent = written.is_pending();
                ready!(written).map_err(Failed::Write)?
            };
            if n == 0 {
                return Poll::Ready(Err(Failed::Write(io::ErrorKind::WriteZero.into())));
            }
            peer.consume(n);
            self.carried += n as u64;
            self.counter.increment(n as u64);
            self.moved = true;
        }
    }

    fn carried(&self) -> u64 {
        self.carried
    }

    fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    fn unsent(&self) -> bool {
        self.unsent
    }
}

/// App → peer without a user-space copy: one `readv` puts the app's bytes where they belong in
/// consecutive records (after room for each header, before room for each content type and tag),
/// each is sealed in place, and the whole run leaves in one `write`. Slots follow the forwarding
/// buffer policy: one record's worth until the connection has carried `grow_after`, then [`BATCH`].
pub struct AppToRecords<'a> {
    policy: BufferPolicy,
    /// Record slots, held from a read until its records are written.
    slab: Option<Vec<u8>>,
    /// Sealed bytes at the start of `slab`, and how many of them have been written.
    sealed: usize,
    written: usize,
    carried: u64,
    counter: &'a Counter,
    read_done: bool,
    moved: bool,
}

impl<'a> AppToRecords<'a> {
    pub fn new(policy: BufferPolicy, counter: &'a Counter) -> Self {
        Self {
            policy,
            slab: None,
            sealed: 0,
            written: 0,
            carried: 0,
            counter,
            read_done: false,
            moved: false,
        }
    }
}

impl Pump<TcpStream, Box<RecordStream>> for AppToRecords<'_> {
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        app: Pin<&mut TcpStream>,
        peer: Pin<&mut Box<RecordStream>>,
    ) -> Poll<Result<(), Failed>> {
        let app = app.get_mut();
        let peer = &mut **peer.get_mut();
        loop {
            // Sealed records first, then what the stream queued itself (a KeyUpdate).
            if let Some(slab) = &self.slab {
                while self.written < self.sealed {
                    let n = ready!(peer.poll_write_sealed(cx, &slab[self.written..self.sealed]))
                        .map_err(Failed::Write)?;
                    if n == 0 {
                        return Poll::Ready(Err(Failed::Write(io::ErrorKind::WriteZero.into())));
                    }
                    self.written += n;
                    self.moved = true;
                }
            }
            // Written: the slab goes back, so a connection waiting on its app holds none.
            if let Some(slab) = self.slab.take() {
                slabs::give(slab);
            }
            ready!(peer.poll_write_out(cx)).map_err(Failed::Write)?;
            if self.read_done {
                ready!(Pin::new(&mut *peer).poll_shutdown(cx)).map_err(Failed::Write)?;
                return Poll::Ready(Ok(()));
            }
            // As many records as the sending key has left (a rotation queues a KeyUpdate first).
            let left = peer.records_left().map_err(Failed::Write)?;
            if peer.has_queued() {
                continue;
            }
            let wanted = (self.policy.size_for(self.carried) / MAX_PLAINTEXT).clamp(1, BATCH);
            let large = wanted > 1;
            let slots = wanted.min(left);

            if let Err(e) = ready!(app.poll_read_ready(cx)) {
                return Poll::Ready(Err(Failed::Read(e)));
            }
            let mut slab = slabs::take(large);
            let got = {
                let count = slots.min(slab.len() / MAX_SEALED);
                let mut slots = slab.chunks_exact_mut(MAX_SEALED);
                let mut slices: [IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| {
                    let payload = slots.next().map(|s| &mut s[HEADER..HEADER + MAX_PLAINTEXT]);
                    IoSliceMut::new(payload.unwrap_or_default())
                });
                reads::readv_draining(app, &mut slices[..count])
            };
            self.sealed = 0;
            self.written = 0;
            match got {
                Ok(0) => {
                    self.read_done = true;
                    slabs::give(slab);
                }
                Ok(n) => {
                    let (full, rest) = (n / MAX_PLAINTEXT, n % MAX_PLAINTEXT);
                    for slot in slab.chunks_exact_mut(MAX_SEALED).take(full) {
                        peer.seal_in_place(slot);
                    }
                    self.sealed = full * MAX_SEALED;
                    if rest > 0 {
                        let end = self.sealed + HEADER + rest + 1 + TAG;
                        peer.seal_in_place(&mut slab[self.sealed..end]);
                        self.sealed = end;
                    }
                    self.slab = Some(slab);
                    self.carried += n as u64;
                    self.counter.increment(n as u64);
                    self.moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    slabs::give(slab); // nothing to read: hold no buffer meanwhile
                }
                Err(e) => return Poll::Ready(Err(Failed::Read(e))),
            }
        }
    }

    fn carried(&self) -> u64 {
        self.carried
    }

    fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    fn unsent(&self) -> bool {
        // The slab is given back once all its sealed records are written.
        self.slab.is_some()
    }
}

/// Record slots are read into, so they must be initialised memory; zeroing a batch for every
/// read would cost what the copy it replaces did. Each worker thread keeps a few slabs of each
/// size for reuse instead. A connection holds one only between a read and the end of its
/// write, so an idle connection holds none.
mod slabs {
    use super::*;

    const KEPT: usize = 4;

    thread_local! {
        static SMALL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        static LARGE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take(large: bool) -> Vec<u8> {
        let (kept, slots) = if large { (&LARGE, BATCH) } else { (&SMALL, 1) };
        kept.with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| vec![0; slots * MAX_SEALED])
    }

    pub fn give(slab: Vec<u8>) {
        let kept = if slab.len() > MAX_SEALED {
            &LARGE
        } else {
            &SMALL
        };
        kept.with_borrow_mut(|k| {
            if k.len() < KEPT {
                k.push(slab);
            }
        });
    }
}
