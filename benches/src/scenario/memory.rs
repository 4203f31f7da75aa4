//! Scenario 4: memory per idle connection. Opens connections in steps (e.g. 1,000 then
//! 10,000 held at once), each proven established end to end by a one-byte echo, and reads each
//! side's RSS (whole process tree, from /proc) after every step. Per connection =
//! (RSS now − RSS before the first connection) / connections held. Kernel socket buffers are
//! not in RSS and not counted.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::client::{self, Io, Target};
use crate::server::ECHO;

#[derive(Debug, Clone)]
pub struct Step {
    /// Connections held when RSS was read (less than asked if the time bound hit first).
    pub held: usize,
    pub asked: usize,
    /// RSS per side in KiB (outbound side absent in the inbound-only topology).
    pub out_kib: Option<u64>,
    pub in_kib: u64,
    pub failed: usize,
}

/// `rss()` returns (outbound KiB, inbound KiB) of the contender now.
pub async fn run(
    target: &Target,
    steps: &[usize],
    max: Duration,
    rss: impl Fn() -> (Option<u64>, u64),
) -> Result<Vec<Step>> {
    let deadline = Instant::now() + max;
    let mut held: Vec<Box<dyn Io>> = Vec::new();
    let mut out = Vec::new();
    let gate = std::sync::Arc::new(Semaphore::new(64));
    let mut failed = 0;
    for &asked in steps {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in held.len()..asked {
            let target = target.clone();
            let gate = gate.clone();
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await.ok()?;
                if Instant::now() > deadline {
                    return None;
                }
                let attempt = async {
                    let mut s = client::connect(&target).await?;
                    s.write_all(&[ECHO, 1]).await?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await?;
                    Ok::<_, std::io::Error>(s)
                };
                tokio::time::timeout(Duration::from_secs(10), attempt)
                    .await
                    .ok()?
                    .ok()
            });
        }
        while let Some(r) = tasks.join_next().await {
            match r.ok().flatten() {
                Some(s) => held.push(s),
                None => failed += 1,
            }
        }
        let (out_kib, in_kib) = rss();
        out.push(Step {
            held: held.len(),
            asked,
            out_kib,
            in_kib,
            failed,
        });
    }
    drop(held);
    Ok(out)
}
