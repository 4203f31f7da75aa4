//! The one kTLS system call `nix` does not wrap: `sendmsg` with a `TLS_SET_RECORD_TYPE` control
//! message, which is how a close_notify alert is sent on a kTLS socket. Everything else (socket
//! options, `recvmsg` with the record-type cmsg, `splice`, pipes) goes through `nix`'s safe API.
#![allow(unsafe_code)] // sendmsg with a hand-built control message has no safe wrapper.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sends `payload` as one TLS record of content type `record_type` (21 = alert).
pub fn send_control_record(
    fd: BorrowedFd<'_>,
    record_type: u8,
    payload: &[u8],
) -> io::Result<usize> {
    // Room for one cmsghdr with a one-byte payload, aligned like the kernel expects.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: every pointer in `msg` refers to locals that outlive the sendmsg call; the control
    // buffer (64 bytes, 8-byte aligned) is larger than CMSG_SPACE(1) (24 bytes on 64-bit), so
    // CMSG_FIRSTHDR returns a valid header inside it and CMSG_DATA a byte within it.
    unsafe {
        let space = libc::CMSG_SPACE(1) as usize;
        debug_assert!(space <= std::mem::size_of_val(&control));
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_TLS;
        (*cmsg).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = record_type;
        let sent = libc::sendmsg(fd.as_raw_fd(), &msg, 0);
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }
}
