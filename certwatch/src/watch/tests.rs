use std::time::{Duration, Instant};

use super::*;
use crate::test_pki::{Leaf, ca, good_leaf};
use crate::testing::SecretDir;

fn files<'a>(leaf: &'a Leaf, ca_pem: &'a str) -> [(&'static str, &'a [u8]); 3] {
    [
        ("tls.crt", leaf.cert.as_bytes()),
        ("tls.key", leaf.key.as_bytes()),
        ("ca.crt", ca_pem.as_bytes()),
    ]
}

fn start_serial_watch(
    dir: &std::path::Path,
    poll: Duration,
) -> (Reloadable<String>, ReloadHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    let options = Options {
        poll_interval: poll,
        ..Options::default()
    };
    let (reloadable, handle) = start(
        CertSource::Dir(dir.to_path_buf()),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        options,
        |m: &Material| Ok(m.leaf.serial.clone()),
        shutdown.clone(),
    );
    (reloadable, handle, shutdown)
}

/// Publishes a value that changes with the file contents, so a wrongly published broken swap
/// is visible even when it reuses the good certificate.
fn start_digest_watch(
    dir: &std::path::Path,
    poll: Duration,
    watch_directories: bool,
) -> (Reloadable<String>, ReloadHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    let options = Options {
        poll_interval: poll,
        watch_directories,
        ..Options::default()
    };
    let (reloadable, handle) = start(
        CertSource::Dir(dir.to_path_buf()),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        options,
        |m: &Material| Ok(m.digest.iter().map(|b| format!("{b:02x}")).collect()),
        shutdown.clone(),
    );
    (reloadable, handle, shutdown)
}

fn serial_of(leaf: &Leaf) -> String {
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(leaf.cert.as_bytes()).unwrap();
    let der: rustls_pki_types::CertificateDer<'_> = der;
    crate::LeafInfo::from_der(&der).unwrap().serial
}

/// Polls until the published serial is `want` or the deadline passes.
async fn wait_for_serial(r: &Reloadable<String>, want: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if r.current().map(|l| l.value.clone()).as_deref() == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn picks_up_a_kubelet_swap_through_directory_events() {
    let dir = tempfile::tempdir().unwrap();
    let secret = SecretDir::new(dir.path());
    let ca = ca("root");
    let first = good_leaf(&ca);
    secret.swap(&files(&first, &ca.pem)).unwrap();
    // A long poll interval: only the directory watch can make this pass in time.
    let (r, _h, stop) = start_serial_watch(dir.path(), Duration::from_secs(3600));
    assert_eq!(r.current().unwrap().value, serial_of(&first));

    let second = good_leaf(&ca);
    secret.swap(&files(&second, &ca.pem)).unwrap();
    assert!(wait_for_serial(&r, &serial_of(&second), Duration::from_secs(2)).await);
    stop.cancel();
}

#[tokio::test]
async fn a_burst_of_swaps_publishes_only_good_material() {
    let dir = tempfile::tempdir().unwrap();
    let secret = SecretDir::new(dir.path());
    let ca = ca("root");
    let good = good_leaf(&ca);
    secret.swap(&files(&good, &ca.pem)).unwrap();
    let (r, _h, stop) = start_digest_watch(dir.path(), Duration::from_secs(3600), true);
    let good_digest = r.current().unwrap().value.clone();

    let other = good_leaf(&ca);
    let mismatched = Leaf {
        cert: good.cert.clone(),
        key: other.key.clone(),
    };
    secret.swap(&files(&mismatched, &ca.pem)).unwrap();
    secret
        .swap(&[
            ("tls.crt", b"garbage"),
            ("tls.key", b"x"),
            ("ca.crt", ca.pem.as_bytes()),
        ])
        .unwrap();
    let next = good_leaf(&ca);
    secret.swap(&files(&next, &ca.pem)).unwrap();

    // Record every value published until the good swap shows up: the broken ones never do.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = vec![good_digest];
    while Instant::now() < deadline && r.current().unwrap().material.leaf.serial != serial_of(&next)
    {
        let now = r.current().unwrap().value.clone();
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(r.current().unwrap().material.leaf.serial, serial_of(&next));
    assert_eq!(seen.len(), 1, "a broken swap was published: {seen:?}");
    stop.cancel();
}

#[tokio::test]
async fn periodic_re_read_catches_changes_without_directory_events() {
    let dir = tempfile::tempdir().unwrap();
    let secret = SecretDir::new(dir.path());
    let ca = ca("root");
    let first = good_leaf(&ca);
    secret.swap(&files(&first, &ca.pem)).unwrap();
    let (r, _h, stop) = start_digest_watch(dir.path(), Duration::from_millis(50), false);
    let second = good_leaf(&ca);
    secret.swap(&files(&second, &ca.pem)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && r.current().unwrap().material.leaf.serial != serial_of(&second)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        r.current().unwrap().material.leaf.serial,
        serial_of(&second)
    );
    stop.cancel();
}

#[tokio::test]
async fn reload_now_forces_a_reload_and_starts_without_files() {
    let dir = tempfile::tempdir().unwrap();
    let (r, h, stop) = start_serial_watch(dir.path(), Duration::from_secs(3600));
    assert!(r.current().is_none(), "nothing to load yet");

    // Files written in place (no symlink swap), in a directory the watcher may or may not
    // report on: the forced reload must load them regardless.
    let ca = ca("root");
    let leaf = good_leaf(&ca);
    for (name, body) in files(&leaf, &ca.pem) {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    h.reload_now();
    assert!(wait_for_serial(&r, &serial_of(&leaf), Duration::from_secs(2)).await);
    stop.cancel();
}
