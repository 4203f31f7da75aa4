//! Scenario 1: bulk throughput. Each stream announces its length, sends it to the sink and
//! waits for the sink's byte count, which must match. Throughput counts from the first connect
//! to the last count received. A stream that has not finished by `max` fails (the bound).

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
    let transfer = async {
        let mut s = client::connect(target).await?;
        let mut header = vec![SINK];
        header.extend_from_slice(&bytes.to_le_bytes());
        s.write_all(&header).await?;
        let mut sent = 0u64;
        while sent < bytes {
            let n = chunk.len().min((bytes - sent) as usize);
            s.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        s.flush().await?;
        let mut count = [0u8; 8];
        s.read_exact(&mut count).await?;
        let received = u64::from_le_bytes(count);
        if received != sent {
            bail!("sent {sent} bytes but the sink received {received}");
        }
        // A clean close (close_notify + FIN) so no side logs a truncation.
        let _ = s.shutdown().await;
        Ok(sent)
    };
    match tokio::time::timeout_at(deadline.into(), transfer).await {
        Ok(r) => r,
        Err(_) => bail!("not finished within the time bound"),
    }
}
