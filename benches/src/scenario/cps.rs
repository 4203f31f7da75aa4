//! Scenario 2: new connections per second. `concurrency` workers each loop until the deadline:
//! connect (and, for the inbound-only topology, handshake), send a 64 B request, read the echo,
//! close cleanly. Only connections that got their echo back count.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, Target};
use crate::server::ECHO;
use crate::stats::quantile;

#[derive(Debug, Clone)]
pub struct Rate {
    pub ok: u64,
    pub failed: u64,
    pub secs: f64,
    /// Median time from connect to echo, µs.
    pub p50_us: f64,
    pub p99_us: f64,
}

pub async fn run(target: &Target, concurrency: usize, duration: Duration) -> Result<Rate> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match tokio::time::timeout(Duration::from_secs(5), one(&target)).await {
                    Ok(Ok(())) => times.push(t0.elapsed().as_nanos() as u64),
                    _ => failed += 1,
                }
            }
            (times, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (times, f) = t.await?;
        all.extend(times);
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Rate {
        ok: all.len() as u64,
        failed,
        secs,
        p50_us: quantile(&all, 0.5) / 1e3,
        p99_us: quantile(&all, 0.99) / 1e3,
    })
}

async fn one(target: &Target) -> std::io::Result<()> {
    let mut s = client::connect(target).await?;
    let mut msg = [0x5au8; 65];
    msg[0] = ECHO;
    s.write_all(&msg).await?;
    let mut back = [0u8; 64];
    s.read_exact(&mut back).await?;
    s.shutdown().await
}
