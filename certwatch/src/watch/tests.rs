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

#[tokio::test]
async fn a_directory_deleted_and_created_again_is_watched_again() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("certs");
    std::fs::create_dir(&dir).unwrap();
    let ca = ca("root");
    let first = good_leaf(&ca);
    SecretDir::new(&dir).swap(&files(&first, &ca.pem)).unwrap();
    // A long poll interval: only directory events can make this pass in time.
    let (r, _h, stop) = start_serial_watch(&dir, Duration::from_secs(3600));
    assert_eq!(r.current().unwrap().value, serial_of(&first));

    // Twice: the watch must come back every time, not only once.
    for round in 0..2 {
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let secret = SecretDir::new(&dir);
        let recreated = good_leaf(&ca);
        secret.swap(&files(&recreated, &ca.pem)).unwrap();
        assert!(
            wait_for_serial(&r, &serial_of(&recreated), Duration::from_secs(5)).await,
            "round {round}: the recreated directory's files were not loaded"
        );
        // The change that used to wait for the periodic re-read.
        let next = good_leaf(&ca);
        secret.swap(&files(&next, &ca.pem)).unwrap();
        assert!(
            wait_for_serial(&r, &serial_of(&next), Duration::from_secs(5)).await,
            "round {round}: a swap in the recreated directory was not seen"
        );
    }
    stop.cancel();
}

/// Waits for one wake-up of the watch task, at most `within`.
async fn woken(changed: &Notify, within: Duration) -> bool {
    tokio::time::timeout(within, changed.notified())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_missing_directory_is_noticed_through_its_parent_when_it_appears() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("certs");
    let changed = Arc::new(Notify::new());
    // Missing from the start (nothing has happened yet, so no wake-up is pending).
    let mut watch = DirWatch::new(vec![dir.clone()], changed.clone());
    assert_eq!(watch.pending, std::slice::from_ref(&dir));
    assert_eq!(watch.parents, [root.path().to_path_buf()]);

    std::fs::create_dir(&dir).unwrap();
    assert!(
        woken(&changed, Duration::from_secs(5)).await,
        "the directory's creation was not reported"
    );
    watch.rearm();
    assert!(watch.pending.is_empty(), "{:?}", watch.pending);
    assert!(watch.parents.is_empty(), "{:?}", watch.parents);
    std::fs::write(dir.join("tls.crt"), "x").unwrap();
    assert!(woken(&changed, Duration::from_secs(5)).await);

    // Gone again (the event may or may not have been handled yet: either way it is pending).
    std::fs::remove_dir_all(&dir).unwrap();
    watch.rearm();
    assert_eq!(watch.pending, std::slice::from_ref(&dir));
    assert_eq!(watch.parents, [root.path().to_path_buf()]);
}

#[test]
fn only_the_directories_and_their_entries_wake_the_watcher() {
    use notify::event::{AccessKind, CreateKind, RemoveKind};

    let dirs = [PathBuf::from("/run/certs")];
    let gone = Mutex::new(Vec::new());
    let event = |kind, paths: &[&str]| {
        paths
            .iter()
            .fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    };
    let relevant = |e: &Event| on_event(e, &dirs, &gone);
    let taken = || std::mem::take(&mut *gone.lock().unwrap());
    assert!(relevant(&event(
        EventKind::Create(CreateKind::File),
        &["/run/certs/..data"]
    )));
    assert!(!relevant(&event(
        EventKind::Access(AccessKind::Any),
        &["/run/certs/tls.crt"]
    )));
    // Seen through the parent's watch: other entries of the parent are noise.
    assert!(!relevant(&event(
        EventKind::Create(CreateKind::File),
        &["/run/other"]
    )));
    assert!(taken().is_empty());
    // The directory itself: appearing wakes; going (deleted, renamed away) is recorded too.
    assert!(relevant(&event(
        EventKind::Create(CreateKind::Folder),
        &["/run/certs"]
    )));
    assert!(relevant(&event(
        EventKind::Modify(ModifyKind::Name(RenameMode::To)),
        &["/run/certs"]
    )));
    assert!(taken().is_empty());
    assert!(relevant(&event(
        EventKind::Remove(RemoveKind::Folder),
        &["/run/certs"]
    )));
    assert_eq!(taken(), dirs);
    assert!(relevant(&event(
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
        &["/run/certs", "/run/certs.old"]
    )));
    assert_eq!(taken(), dirs);
    // An overflowed queue (notify: no paths, the Rescan flag): reload and watch afresh.
    assert!(relevant(
        &Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
    ));
    assert_eq!(taken(), dirs);
    assert!(!relevant(&Event::new(EventKind::Other)));
}
