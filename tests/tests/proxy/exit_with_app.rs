//! `--exit-with-app`: a classic sidecar in a Job's pod ends when the app's processes do. The pod
//! is played by a new PID namespace whose PID 1 is a shell (the pause process), with a native
//! sidecar in a cgroup of its own (it runs before the proxy starts and after the app ends), the
//! proxy, a lingering process in the proxy's own cgroup (as an exec probe would be) and, once the
//! proxy is ready (the kubelet's `postStart` hold), the app in a cgroup of its own (as in a
//! container of its own).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gembok_tests::pki::{CertDir, TestPki};
use gembok_tests::proxy::{Proxy, ProxyBuilder};
use gembok_tests::traffic::ExchangeApp;

/// PID 1 of the pod: starts the native sidecar (which moves itself into `$SIDECAR_CGROUP` and
/// runs until the pod ends), the lingering process and the proxy (`$0 "$@"`); waits until the
/// test closes `$START_FIFO` (the proxy is ready); starts the app (which moves itself into
/// `$APP_CGROUP` and then waits for the test to close `$APP_FIFO`); and exits with the proxy's
/// status.
const POD: &str = r#"
sh -c 'echo $$ > "$SIDECAR_CGROUP/cgroup.procs" && exec tail -f /dev/null' >/dev/null 2>&1 &
until grep -q . "$SIDECAR_CGROUP/cgroup.procs"; do :; done
tail -f /dev/null 2>/dev/null &
"$0" "$@" &
proxy=$!
cat "$START_FIFO" >/dev/null
sh -c 'echo $$ > "$APP_CGROUP/cgroup.procs" && exec cat "$APP_FIFO" >/dev/null 2>&1' &
wait $proxy
"#;

/// A cgroup (v2) of the test's own, removed on drop; `None` where the host gives none to make
/// (not root, no cgroup2 mount).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Option<Cgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = mountinfo.lines().find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let fstype = fs.split_whitespace().next()?;
            (fstype == "cgroup2").then(|| mount.split_whitespace().nth(4).map(PathBuf::from))?
        })?;
        let dir = mount.join(format!("{name}-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => Some(Cgroup(dir)),
            Err(e) => {
                eprintln!("cannot create a cgroup under {}: {e}", mount.display());
                None
            }
        }
    }
}

impl Drop for Cgroup {
    /// A cgroup can be removed once its processes are gone; the pod's are killed with its PID 1,
    /// which the kernel may still be doing.
    fn drop(&mut self) {
        for _ in 0..200 {
            match std::fs::remove_dir(&self.0) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return,
            }
        }
    }
}

/// Opens a FIFO for writing and closes it: its reader, blocked until then, reads EOF.
async fn close_fifo(path: PathBuf) {
    let writer =
        tokio::task::spawn_blocking(move || OpenOptions::new().write(true).open(&path).map(drop));
    tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the FIFO's reader opened it")
        .unwrap()
        .unwrap();
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// An app, the sidecar's certificates, and a proxy to start in front of the app; the first two
/// must outlive the proxy.
async fn job_sidecar() -> (ExchangeApp, CertDir, ProxyBuilder) {
    let dir = CertDir::new(&TestPki::new().workload("job"));
    let app = ExchangeApp::start().await;
    let builder = Proxy::builder().cert_dir(&dir).inbound(app.addr, "");
    (app, dir, builder)
}

#[tokio::test]
async fn a_sidecar_exits_when_the_apps_processes_have_all_exited() {
    let (Some(cgroup), Some(sidecar)) = (
        Cgroup::new("gembok-test-app"),
        Cgroup::new("gembok-test-sidecar"),
    ) else {
        eprintln!("skipped: no cgroup to put the app in (needs root and a cgroup2 mount)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (fifo, start) = (tmp.path().join("app"), tmp.path().join("start"));
    mkfifo(&fifo);
    mkfifo(&start);
    let (_app, _dir, builder) = job_sidecar().await;
    let mut proxy = builder
        .launcher(&[
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            POD,
        ])
        .env("APP_CGROUP", &cgroup.0.display().to_string())
        .env("APP_FIFO", &fifo.display().to_string())
        .env("SIDECAR_CGROUP", &sidecar.0.display().to_string())
        .env("START_FIFO", &start.display().to_string())
        .env("GEMBOK_EXIT_WITH_APP", "true")
        // The app is gone: a drain delay (meant for SIGTERM) does not hold the exit.
        .args(["--drain-delay", "60s", "--drain-grace", "120s"])
        .start();
    proxy.ready().await;
    assert!(
        proxy.logs().contains("native sidecars") && proxy.logs().contains(r#""containers":1"#),
        "the sidecar running before the proxy was noted:\n{}",
        proxy.logs()
    );
    // Ready: the kubelet lets the app start.
    close_fifo(start).await;
    proxy
        .wait_log("the app is running", Duration::from_secs(10))
        .await;
    assert_eq!(
        proxy.get("/ready").await.0,
        200,
        "a running app keeps the proxy serving:\n{}",
        proxy.logs()
    );

    // The app ends (its `cat` reads EOF once the only writer closes); the sidecar runs on.
    close_fifo(fifo).await;
    let status = proxy.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}\n{}", proxy.logs());
    let logs = proxy.logs();
    assert!(
        logs.contains("the app's processes have all exited"),
        "{logs}"
    );
    assert!(logs.contains("drained; exiting"), "{logs}");
}

#[tokio::test]
async fn a_sidecar_that_cannot_see_the_app_says_so_and_keeps_serving() {
    let (_app, _dir, builder) = job_sidecar().await;
    // A pod without shareProcessNamespace: the proxy is PID 1 of its own namespace.
    let mut proxy = builder
        .launcher(&["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .args(["--exit-with-app"])
        .start();
    proxy.ready().await;
    proxy
        .wait_log(
            "does not share its process namespace",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(proxy.get("/ready").await.0, 200, "{}", proxy.logs());
    // unshare passes no signal on: the kubelet's SIGTERM goes to the proxy itself.
    let launcher = proxy.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).unwrap();
    let pid: i32 = children.trim().parse().expect("one child, the proxy");
    assert_eq!(gembok_tests::proxy::send_signal(pid, libc::SIGTERM), 0);
    let status = proxy.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}\n{}", proxy.logs());
}
