//! A TCP socket's own counters (`TCP_INFO`), which neither nix nor socket2 wraps: one
//! `getsockopt` into libc's struct. The idle timer reads it once per idle period (never on the
//! data path) to tell a quiet connection from one whose bytes are still draining out of the
//! kernel's buffers into a slow reader; tests read what went on the wire.
#![allow(unsafe_code)] // getsockopt(TCP_INFO) has no safe wrapper in our dependencies.

use std::io;
use std::os::fd::RawFd;

/// The socket's `tcp_info`; `Err` when `fd` is not a TCP socket (or is closed).
pub fn info(fd: RawFd) -> io::Result<libc::tcp_info> {
    // SAFETY: `tcp_info` is plain integers, valid zeroed; the kernel writes at most `len` bytes
    // into it, and `len` is its size. A stale `fd` makes the call fail or describe another
    // socket: either way only this struct is written.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Older kernels fill less; the fields we read need Linux 4.6.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_notsent_bytes) + 4;
    if (len as usize) < needed {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel's TCP_INFO stops before tcpi_notsent_bytes",
        ));
    }
    Ok(info)
}

/// Bytes the socket's peer has acknowledged plus bytes it has sent us: grows while anything
/// moves on the wire, including what drains from the kernel's buffers without waking us.
pub fn progress(fd: RawFd) -> Option<u64> {
    info(fd)
        .ok()
        .map(|i| i.tcpi_bytes_acked.wrapping_add(i.tcpi_bytes_received))
}
