//! The Landlock sandbox holds in the running proxy, on the threads that reload certificates too:
//! certificate links re-pointed at a directory it was not given are refused on reload (the read
//! is denied), where the same swap reloads with `--sandbox off`. The kubelet's `..data` swaps,
//! which stay inside the given directory, are exercised by every reload test, sandboxed by
//! default. Skipped, saying so, on a kernel without Landlock. The seccomp filters are on every
//! thread. (The TCP ports are checked against
//! the kernel in `proxy/src/sandbox.rs`: the proxy itself never tries a port it was not given.)

use std::path::Path;
use std::time::Duration;

use gembok_certs_dev::Leaf;
use gembok_tests::pki::{CertDir, TestPki};
use gembok_tests::proxy::Proxy;

use crate::support::wait_metric;

/// `dir/{tls.crt,tls.key,ca.crt}` with `leaf`'s PEM files.
fn write_leaf(dir: &Path, leaf: &Leaf) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, pem) in [
        ("tls.crt", &leaf.chain_pem),
        ("tls.key", &leaf.key_pem),
        ("ca.crt", &leaf.ca_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
}

/// Points `live/NAME` at `target/NAME` for the three files, each link replaced atomically.
fn link(live: &Path, target: &Path) {
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        let tmp = live.join(format!(".{name}.tmp"));
        std::os::unix::fs::symlink(target.join(name), &tmp).unwrap();
        std::fs::rename(&tmp, live.join(name)).unwrap();
    }
}

/// Starts a proxy on `live/*` (links into `first/`), then re-points the links at `second/`
/// (a directory created after the start) and returns the proxy once it has tried the reload.
async fn relink_after_start(pki: &TestPki, sandbox: &str) -> (Proxy, tempfile::TempDir, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (live, first, second) = (
        tmp.path().join("live"),
        tmp.path().join("first"),
        tmp.path().join("second"),
    );
    write_leaf(&first, &pki.workload("server"));
    std::fs::create_dir_all(&live).unwrap();
    link(&live, &first);
    let file = |name: &str| live.join(name).display().to_string();
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::builder()
        .args(["--cert", &file("tls.crt"), "--key", &file("tls.key")])
        .args(["--ca", &file("ca.crt"), "--sandbox", sandbox])
        .inbound(app.local_addr().unwrap(), "")
        .start();
    proxy.ready().await;
    let sandboxed = proxy.logs().contains("sandboxed (Landlock)");
    let landlock = match (sandboxed, sandbox) {
        (false, "off") => "off",
        (false, _) => "none",
        (true, _) if proxy.logs().contains("is older") => "partial",
        (true, _) => "full",
    };
    let m = proxy.metrics().await;
    let labels = [("landlock", landlock)];
    assert_eq!(m.sum("gembok_sandbox_info", &labels), 1.0, "{m:?}");
    if sandboxed && !proxy.logs().contains("is older") {
        // TCP too: the app's port is the one it may connect to.
        let port = app.local_addr().unwrap().port();
        let logs = proxy.logs();
        let line = logs.lines().find(|l| l.contains("sandboxed (Landlock)"));
        assert!(
            line.is_some_and(|l| l.contains("tcp_connect") && l.contains(&format!("{{{port}}}"))),
            "{logs}"
        );
    }

    write_leaf(&second, &pki.workload("server"));
    link(&live, &second);
    proxy.signal(libc::SIGHUP); // the links' directory changed too: either one triggers it
    (proxy, tmp, sandboxed)
}

#[tokio::test]
async fn a_reload_cannot_read_outside_the_directories_the_sandbox_was_given() {
    let pki = TestPki::new();
    let (proxy, _tmp, sandboxed) = relink_after_start(&pki, "auto").await;
    if !sandboxed {
        assert!(
            proxy
                .logs()
                .contains("not sandboxed: this kernel has no Landlock")
        );
        eprintln!("SKIP: this kernel has no Landlock (the proxy said so)");
        return;
    }
    wait_metric(
        &proxy,
        "gembok_cert_reloads_total",
        &[("result", "failure")],
        1.0,
    )
    .await;
    proxy
        .wait_log("Permission denied", Duration::from_secs(10))
        .await;
    let m = proxy.metrics().await;
    assert_eq!(
        m.sum("gembok_cert_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        proxy.get("/ready").await.0,
        200,
        "the first certificate is still served"
    );

    // Unsandboxed, the same swap reloads: the refusal above was the sandbox's.
    let (proxy, _tmp, sandboxed) = relink_after_start(&pki, "off").await;
    assert!(!sandboxed);
    wait_metric(
        &proxy,
        "gembok_cert_reloads_total",
        &[("result", "success")],
        2.0,
    )
    .await;
    assert!(proxy.logs().contains("not sandboxed: --sandbox off"));
}

/// The seccomp half of the sandbox (`net/src/seccomp.rs`) holds on every thread of the running
/// proxy, jemalloc's purge thread (started before `main`) included: each runs under as many more
/// filters than this test process as the proxy installs. With `--sandbox off`, none more. (What
/// the filters refuse is checked against the kernel in `net/src/seccomp.rs`.)
#[tokio::test]
async fn every_thread_of_the_proxy_runs_under_the_seccomp_filters() {
    let base = gembok_tests::seccomp_of("self")
        .first()
        .and_then(|t| t.filters);
    let installed = gembok_net::seccomp::programs().unwrap().len();
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let start = |sandbox: &str| {
        Proxy::builder()
            .cert_dir(&dir)
            .inbound(app.local_addr().unwrap(), "")
            .args(["--sandbox", sandbox])
            .start()
    };

    let proxy = start("auto");
    proxy.ready().await;
    if proxy.logs().contains("no seccomp filter") {
        eprintln!(
            "SKIP: the kernel refused seccomp filters here:\n{}",
            proxy.logs()
        );
        return;
    }
    assert!(
        proxy.logs().contains("system calls refused (seccomp)"),
        "{}",
        proxy.logs()
    );
    // /metrics says so, for fleet dashboards: seccomp on every thread.
    let m = proxy.metrics().await;
    let on_all = [("seccomp", "all_threads")];
    assert_eq!(m.sum("gembok_sandbox_info", &on_all), 1.0, "{m:?}");
    let threads = gembok_tests::seccomp_of(&proxy.pid().to_string());
    assert!(
        threads.len() >= 3,
        "main, a worker and the purge thread: {threads:?}"
    );
    for thread in &threads {
        assert_eq!(thread.mode, 2, "{thread:?} of {threads:?}");
        if let Some(base) = base {
            assert_eq!(thread.filters, Some(base + installed), "{thread:?}");
        }
    }

    let off = start("off");
    off.ready().await;
    for thread in gembok_tests::seccomp_of(&off.pid().to_string()) {
        if let Some(base) = base {
            assert_eq!(thread.filters, Some(base), "{thread:?}");
        }
    }
    assert!(!off.logs().contains("seccomp"), "{}", off.logs());
    let m = off.metrics().await;
    let labels = [("landlock", "off"), ("seccomp", "off")];
    assert_eq!(m.sum("gembok_sandbox_info", &labels), 1.0, "{m:?}");
}
