//! Scenario 3: request/response latency over one connection, on a dedicated thread with
//! blocking sockets (no executor in the measured path).
//! - ping-pong: send a message, read it back, repeat; every round trip is a sample;
//! - fixed rate: requests are due at `start + i / rate`; a sample runs from when the request
//!   was *due* to when its answer arrived, so a stall delays the following requests and counts
//!   against them too (no coordinated omission).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::client::{Target, connect_blocking};
use crate::server::ECHO;

/// Round-trip times in nanoseconds, sorted.
pub fn ping_pong(target: &Target, size: usize, n: usize, warmup: usize) -> Result<Vec<u64>> {
    let mut s = connect_blocking(target, Duration::from_secs(10))?;
    s.write_all(&[ECHO])?;
    let msg = vec![0xa5u8; size];
    let mut back = vec![0u8; size];
    let mut times = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t0 = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if i >= warmup {
            times.push(t0.elapsed().as_nanos() as u64);
        }
    }
    times.sort_unstable();
    Ok(times)
}

pub fn fixed_rate(target: &Target, size: usize, rate: u32, duration: Duration) -> Result<Vec<u64>> {
    let mut s = connect_blocking(target, Duration::from_secs(10))?;
    s.write_all(&[ECHO])?;
    let msg = vec![0xa5u8; size];
    let mut back = vec![0u8; size];
    // Warm the path up before the clock starts.
    for _ in 0..50 {
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let n = (duration.as_secs_f64() * f64::from(rate)) as u32;
    let mut times = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * i;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        times.push(due.elapsed().as_nanos() as u64);
    }
    if times.is_empty() {
        bail!("no requests sent");
    }
    times.sort_unstable();
    Ok(times)
}
