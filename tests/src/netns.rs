//! A network namespace of a test's own, for host settings a test must not change on the host:
//! here `net.ipv6.bindv6only = 1` (IPv6 sockets are IPv6-only unless they say otherwise), under
//! which a `[::]` listener must still answer IPv4. Needs root (`unshare`, `nsenter`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether this process may create network namespaces.
pub fn available() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Starts `command` in a new network namespace with loopback up and
/// `net.ipv6.bindv6only = 1`; stderr is piped for the test's messages.
pub fn spawn_ipv6_only(command: &mut Command) -> std::io::Result<Child> {
    let script = "ip link set lo up && sysctl -qw net.ipv6.bindv6only=1 && exec \"$0\" \"$@\"";
    Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .arg(command.get_program())
        .args(command.get_args())
        .envs(
            command
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// The HTTP status `curl` gets for `url` from inside `child`'s namespace ("000": no answer),
/// asked again until it is `want` or 10 s have passed. `extra` goes to curl (e.g. `-k`).
pub fn curl_status(child: &Child, url: &str, extra: &[&str], want: &str) -> String {
    let pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "curl", "-s", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "--max-time", "2"])
            .args(extra)
            .arg(url)
            .output()
            .expect("nsenter and curl");
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        if code == want || Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
