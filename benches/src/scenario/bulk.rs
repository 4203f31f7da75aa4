//! Scenario 1: bulk throughput. Each stream sends its share to the sink and waits for the
//! sink's byte count, which must match (so the run also proves integrity of length and
//! half-close). Throughput counts from the first connect to the last count received.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, Target};
use crate::server::SINK;

/// Bytes carried and wall time.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    pub secs: f64,
}

pub async fn run(target: &Target, streams: usize, total: u64, max: Duration) -> Result<Transfer> {
    let per_stream = total / streams as u64;
    let start = Instant::now();
    let deadline = start + max;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            one_stream(&target, per_stream, deadline).await
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    Ok(Transfer {
        bytes,
        secs: start.elapsed().as_secs_f64(),
    })
}

async fn one_stream(target: &Target, bytes: u64, deadline: Instant) -> Result<u64> {
    // Not all zeros, so nothing on the path can shortcut it.
    let chunk: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 + 13) as u8).collect();
    let mut s = client::connect(target).await?;
    s.write_all(&[SINK]).await?;
    let mut sent = 0u64;
    while sent < bytes && Instant::now() < deadline {
        let n = chunk.len().min((bytes - sent) as usize);
        s.write_all(&chunk[..n]).await?;
        sent += n as u64;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut count)).await??;
    let received = u64::from_le_bytes(count);
    if received != sent {
        bail!("sent {sent} bytes but the sink received {received}");
    }
    Ok(sent)
}
