use clap::Parser;

use super::*;
use crate::cli::Cli;

fn config(args: &[&str]) -> Result<Config, ConfigErrors> {
    let mut argv = vec!["gembok-proxy"];
    argv.extend_from_slice(args);
    Config::from_cli(
        &Cli::try_parse_from(argv)
            .expect("clap accepts the shape")
            .proxy,
    )
}

#[test]
fn parses_the_documented_example() {
    let c = config(&[
        "--cert-dir",
        "/etc/gembok/certs",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080,allow-san=spiffe://cluster.local/ns/ecommerce/sa/*",
        "--outbound",
        "127.0.0.1:15701=payment.ecommerce.svc.cluster.local:8443",
        "--outbound",
        "127.0.0.1:15702=10.0.0.7:6379,server-name=redis.redis.svc,alpn=h2",
    ])
    .unwrap();
    assert_eq!(c.inbound[0].listen, "0.0.0.0:8443".parse().unwrap());
    assert_eq!(c.inbound[0].target, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        c.inbound[0].allow_san[0].to_string(),
        "spiffe://cluster.local/ns/ecommerce/sa/*"
    );
    assert_eq!(c.outbound[0].host, "payment.ecommerce.svc.cluster.local");
    assert_eq!(c.outbound[0].port, 8443);
    assert_eq!(c.outbound[1].server_name.to_str(), "redis.redis.svc");
    assert_eq!(c.outbound[1].alpn, vec![b"h2".to_vec()]);
    assert_eq!(c.client_auth, ClientAuth::Required);
    assert!(!c.tls.tls12);
    assert_eq!(c.tls.provider, Provider::AwsLcRs);
    assert_eq!(c.admin, "127.0.0.1:15700".parse().unwrap());
    assert_eq!(c.certs, CertSource::Dir("/etc/gembok/certs".into()));
}

#[test]
fn semicolons_separate_repeated_values() {
    let c = config(&[
        "--cert-dir",
        "d",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080;0.0.0.0:9443=127.0.0.1:9090,alpn=h2",
    ])
    .unwrap();
    assert_eq!(c.inbound.len(), 2);
    assert_eq!(c.inbound[1].alpn, vec![b"h2".to_vec()]);
}

#[test]
fn reports_every_problem_at_once_naming_each_flag() {
    let err = config(&[
        "--cert",
        "c.pem",
        "--inbound",
        "0.0.0.0:8443=10.1.2.3:8080",
        "--inbound",
        "0.0.0.0:9443",
        "--outbound",
        "0.0.0.0:15701=payment:8443",
        "--outbound",
        "127.0.0.1:15702=payment:8443,colour=blue",
        "--handshake-timeout",
        "soon",
        "--max-connections",
        "0",
        "--crypto-provider",
        "openssl",
        "--inbound-client-auth",
        "maybe",
        "--log-format",
        "xml",
        "--tls12",
        "perhaps",
    ])
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "--inbound: `0.0.0.0:8443=10.1.2.3:8080`: target 10.1.2.3:8080 is not a loopback address",
        "--inbound: `0.0.0.0:9443`: expected LISTEN=TARGET",
        "--outbound: `0.0.0.0:15701=payment:8443`: listen 0.0.0.0:15701 is not a loopback address",
        "unknown option `colour`",
        "--key: required together with --cert",
        "--ca: required together with --cert",
        "--handshake-timeout: `soon`",
        "--max-connections: `0` is not a positive whole number",
        "--crypto-provider: `openssl`",
        "--inbound-client-auth: `maybe`",
        "--log-format: `xml`",
        "--tls12: `perhaps`",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(err.0.len(), 12, "{text}");
}

#[test]
fn counts_beyond_what_a_process_can_hold_are_refused_not_panicked_on() {
    // tokio's semaphore panics above usize::MAX >> 3 permits; a runtime starts every worker.
    let err = config(&[
        "--cert-dir",
        "d",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080",
        "--max-connections",
        "2305843009213693952",
        "--workers",
        "100000",
    ])
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "--max-connections: `2305843009213693952` is more than the most this takes, 10000000",
        "--workers: `100000` is more than the most this takes, 1024",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(err.0.len(), 2, "{text}");
    let c = config(&[
        "--cert-dir",
        "d",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080",
        "--max-connections",
        "10000000",
        "--workers",
        "1024",
    ])
    .unwrap();
    assert_eq!(
        (c.limits.max_connections, c.workers),
        (MAX_CONNECTIONS, Some(MAX_WORKERS))
    );
}

#[test]
fn refuses_clashing_listeners_and_missing_routes() {
    let err = config(&[
        "--cert-dir",
        "d",
        "--admin",
        "0.0.0.0:8443",
        "--inbound",
        "127.0.0.1:8443=127.0.0.1:80",
    ])
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("clashes with --admin 0.0.0.0:8443"),
        "{err}"
    );
    let err = config(&["--cert-dir", "d"]).unwrap_err();
    assert!(err.to_string().contains("nothing to do"), "{err}");
    let err = config(&["--inbound", "0.0.0.0:1=127.0.0.1:2"]).unwrap_err();
    assert!(
        err.to_string().contains("certificates are required"),
        "{err}"
    );
    let err = config(&[
        "--cert-dir",
        "d",
        "--cert",
        "c",
        "--inbound",
        "0.0.0.0:1=127.0.0.1:2",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn allow_san_requires_client_certificates() {
    let err = config(&[
        "--cert-dir",
        "d",
        "--inbound-client-auth",
        "optional",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080,allow-san=a.b",
    ])
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("allow-san needs client certificates"),
        "{err}"
    );
}

#[test]
fn allow_san_files_are_collected_once_and_need_client_certificates_too() {
    let c = config(&[
        "--cert-dir",
        "d",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080,allow-san=a.b.c,allow-san-file=/etc/gembok/allow-san/payment",
        "--inbound",
        "0.0.0.0:9443=127.0.0.1:9090,allow-san-file=/etc/gembok/allow-san/payment",
    ])
    .unwrap();
    assert_eq!(
        c.inbound[0].allow_san_files,
        [PathBuf::from("/etc/gembok/allow-san/payment")]
    );
    assert!(c.inbound.iter().all(InboundRoute::checks_sans));
    assert_eq!(
        c.allow_san_files(),
        [PathBuf::from("/etc/gembok/allow-san/payment")]
    );

    let err = config(&[
        "--cert-dir",
        "d",
        "--inbound-client-auth",
        "none",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080,allow-san-file=/x",
        "--inbound",
        "0.0.0.0:9443=127.0.0.1:9090,allow-san-file=",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("allow-san needs client certificates"), "{err}");
    assert!(err.contains("`allow-san-file=` must be KEY=VALUE"), "{err}");
}

#[test]
fn outbound_to_an_ip_verifies_the_ip_unless_a_name_is_given() {
    let r = parse_outbound("127.0.0.1:1=10.0.0.1:443").unwrap();
    assert!(matches!(r.server_name, ServerName::IpAddress(_)));
    let r = parse_outbound("127.0.0.1:1=[fd00::1]:443,server-name=db.internal").unwrap();
    assert_eq!(r.host, "fd00::1");
    assert_eq!(r.server_name.to_str(), "db.internal");
    assert!(parse_outbound("127.0.0.1:1=x:443,server-name=a,server-name=b").is_err());
}

#[test]
fn refuses_an_inbound_target_that_is_one_of_its_own_listeners() {
    // The admin port trusts loopback: a route to it would hand mesh peers POST /shutdown.
    let err = config(&[
        "--cert-dir",
        "d",
        "--admin",
        "0.0.0.0:15700",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:15700",
    ])
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("target 127.0.0.1:15700 is this proxy's own --admin listener 0.0.0.0:15700"),
        "{err}"
    );
    // Its own outbound listener, and an IPv4-mapped spelling of the same address.
    let err = config(&[
        "--cert-dir",
        "d",
        "--inbound",
        "0.0.0.0:8443=[::ffff:127.0.0.1]:15001",
        "--outbound",
        "127.0.0.1:15001=peer.example:8443",
    ])
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("own --outbound listener 127.0.0.1:15001"),
        "{err}"
    );
    // Another loopback address on the same port is another socket.
    config(&[
        "--cert-dir",
        "d",
        "--admin",
        "127.0.0.1:15700",
        "--inbound",
        "0.0.0.0:8443=127.0.0.2:15700",
    ])
    .unwrap();
}

#[test]
fn durations_beyond_a_year_are_refused_not_left_to_overflow_a_timer() {
    let err = config(&[
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080",
        "--cert-dir",
        "/c",
        "--idle-timeout",
        "500000000000y",
        "--drain-grace",
        "367d",
    ])
    .unwrap_err();
    let text = err.to_string();
    for flag in ["--idle-timeout: `500000000000y`", "--drain-grace: `367d`"] {
        assert!(text.contains(flag), "{text}");
    }
    assert!(text.contains("366 days"), "{text}");
    config(&[
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080",
        "--cert-dir",
        "/c",
        "--idle-timeout",
        "366d",
    ])
    .unwrap();
}

#[test]
fn the_drain_delay_is_part_of_the_grace_period() {
    let base = [
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080",
        "--cert-dir",
        "/c",
    ];
    let with = |extra: &[&str]| config(&[&base[..], extra].concat());
    assert_eq!(with(&[]).unwrap().drain_delay, Duration::ZERO);
    let c = with(&["--drain-delay", "5s", "--drain-grace", "20s"]).unwrap();
    assert_eq!(c.drain_delay, Duration::from_secs(5));
    let err = with(&["--drain-delay", "30s"]).unwrap_err().to_string();
    assert!(
        err.contains("--drain-delay: `30s` must be shorter than --drain-grace (30s)"),
        "{err}"
    );
}

#[test]
fn proxy_protocol_is_v2_on_inbound_routes_only() {
    let route = parse_inbound("0.0.0.0:8443=127.0.0.1:8080,proxy-protocol=v2").unwrap();
    assert!(route.proxy_protocol);
    assert!(
        !parse_inbound("0.0.0.0:8443=127.0.0.1:8080")
            .unwrap()
            .proxy_protocol
    );
    let e = parse_inbound("0.0.0.0:8443=127.0.0.1:8080,proxy-protocol=v1")
        .unwrap_err()
        .join("\n");
    assert!(e.contains("only v2"), "{e}");
    let e = parse_outbound("127.0.0.1:15701=auth:8443,proxy-protocol=v2")
        .unwrap_err()
        .join("\n");
    assert!(e.contains("unknown option `proxy-protocol`"), "{e}");
}

/// A route with several mistakes gets each of them named, not only the first.
#[test]
fn every_problem_of_one_route_is_named() {
    let long = "x".repeat(256);
    let spec = format!("bad=10.0.0.1:80,allow-san=*.com,alpn={long},colour=blue");
    let problems = parse_inbound(&spec).unwrap_err();
    let spec = format!("`{spec}`");
    assert_eq!(problems.len(), 5, "{problems:#?}");
    for (problem, starts) in problems.iter().zip([
        "listen ",
        "target 10.0.0.1:80 is not a loopback address",
        "allow-san ",
        "ALPN protocol `xxx",
        "unknown option `colour`",
    ]) {
        assert!(
            problem.starts_with(&format!("{spec}: {starts}")),
            "{problem:?} does not start with {starts:?}"
        );
    }
    let problems = parse_outbound(&format!(
        "0.0.0.0:1=svc,server-name=a,server-name=b,alpn={long}"
    ))
    .unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    for (problem, says) in problems.iter().zip([
        "listen 0.0.0.0:1 is not a loopback address",
        "`svc` must be HOST:PORT",
        "server-name given twice",
        "ALPN protocol",
    ]) {
        assert!(problem.contains(says), "{problem:?} does not say {says:?}");
    }
}

/// The kernel is probed for kTLS only when it may be used, and `--ktls require` on a kernel that
/// cannot is a problem listed with the others (not found after they are fixed).
#[test]
fn ktls_require_is_checked_against_the_probe_with_every_other_problem() {
    use crate::ktls::{Cipher, Mode, Support, Version};
    let parse = |args: &[&str], probe: &dyn Fn() -> Support| {
        let mut argv = vec![
            "gembok-proxy",
            "--cert-dir",
            "/c",
            "--inbound",
            "[::]:1=127.0.0.1:2",
        ];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("clap accepts the shape");
        Config::parse(&cli.proxy, false, probe)
    };
    let without = || Support {
        available_ulp: "mptcp".to_owned(),
        ulp_error: Some("ENOENT".to_owned()),
        supported: Vec::new(),
        rekey: false,
    };
    let with = || Support {
        available_ulp: "mptcp tls".to_owned(),
        ulp_error: None,
        supported: vec![(Cipher::Aes128Gcm, Version::Tls13)],
        rekey: true,
    };
    let never = || -> Support { panic!("probed with --ktls off") };

    let problems = parse(&["--ktls", "require", "--workers", "0"], &without)
        .unwrap_err()
        .0;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.starts_with(
            "--ktls: require, but this kernel cannot do it: user space (kTLS unavailable: ENOENT"
        )),
        "{problems:?}"
    );

    let config = parse(&["--ktls", "require"], &with).unwrap();
    assert!(config.kernel_tls() && config.ktls_support.rekey);
    let config = parse(&[], &without).unwrap();
    assert_eq!(config.ktls, Mode::Auto);
    assert!(!config.kernel_tls());
    let config = parse(&["--ktls", "off"], &never).unwrap();
    assert!(!config.kernel_tls());
}

#[test]
fn every_problem_of_the_crl_list_is_named() {
    let route = [
        "--cert-dir",
        "d",
        "--inbound",
        "0.0.0.0:8443=127.0.0.1:8080",
    ];
    let with = |crl| config(&[&route[..], &["--crl", crl]].concat());
    let c = with(" a.pem, dir/b.pem ").unwrap();
    assert_eq!(c.crl_files, [PathBuf::from("a.pem"), "dir/b.pem".into()]);
    assert!(config(&route).unwrap().crl_files.is_empty());

    let err = with("a.pem,,b.pem,a.pem").unwrap_err();
    assert_eq!(
        err.0,
        ["--crl: an empty file name", "--crl: a.pem is named twice"],
    );
}
