//! The command line as typed by an operator (or set by the injector through `GEMBOK_*`).
//!
//! Values stay strings here on purpose: [`crate::config`] parses them all and reports every
//! problem at once, where clap would stop at the first bad value.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};
pub use gembok_cliargs::Parsed;

/// Gembok's encryption sidecar: terminates mTLS for the app (inbound) and originates mTLS for it
/// (outbound). TLS 1.3 only and client certificates required, unless relaxed explicitly.
#[derive(Debug, Parser)]
#[command(
    name = "gembok-proxy",
    version,
    about,
    after_help = "Every option also reads a GEMBOK_* environment variable (shown in [env: ...]); \
repeatable options take several values separated by ';'.\n\n\
Examples:\n  gembok-proxy --cert-dir /etc/gembok/certs --inbound 0.0.0.0:8443=127.0.0.1:8080,allow-san=spiffe://cluster.local/ns/ecommerce/sa/*\n  \
gembok-proxy --cert-dir /etc/gembok/certs --outbound 127.0.0.1:15701=payment.ecommerce.svc.cluster.local:8443"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Wait until a gembok-proxy's /ready answers 200 (for a postStart hook that holds the app
    /// until the classic-container sidecar is ready). Exits 0 when ready, 1 on timeout. Reads
    /// only its own flags, no GEMBOK_* variable.
    WaitReady {
        /// Admin address of the proxy to wait for (an unspecified host means loopback).
        #[arg(long, default_value = "127.0.0.1:15700")]
        admin: String,
        /// Give up after this long (a hard deadline; each attempt takes at most 1s).
        #[arg(long, default_value = "120s")]
        timeout: String,
        /// The endpoint to wait for: /ready, or /live (for a liveness probe).
        #[arg(long, default_value = "/ready")]
        path: String,
    },
}

#[derive(Debug, ClapArgs)]
pub struct ProxyArgs {
    /// Accept mTLS on LISTEN and forward plaintext to TARGET on this host:
    /// LISTEN=TARGET[,allow-san=PATTERN]...[,allow-san-file=PATH]...[,alpn=PROTO]...
    /// [,proxy-protocol=v2]. A PATTERN is a DNS name or a URI (spiffe://...) where `*` stands for
    /// one whole label or path segment. allow-san-file names a file of patterns, one per line
    /// (# comments), e.g. a mounted ConfigMap: it is watched and reloaded with the certificates,
    /// and an edit that does not parse keeps the last good list.
    /// proxy-protocol=v2 sends the app a PROXY protocol v2 header first: the client's address
    /// and its verified identity (SPIFFE ID in type 0xE0, TLS details in PP2_TYPE_SSL).
    #[arg(
        long,
        env = "GEMBOK_INBOUND",
        value_delimiter = ';',
        value_name = "SPEC"
    )]
    pub inbound: Vec<String>,

    /// Accept plaintext on a loopback LISTEN and originate mTLS to HOST:PORT:
    /// LISTEN=HOST:PORT[,server-name=NAME][,alpn=PROTO]... The server must present a
    /// certificate for NAME (default HOST) that chains to --ca.
    #[arg(
        long,
        env = "GEMBOK_OUTBOUND",
        value_delimiter = ';',
        value_name = "SPEC"
    )]
    pub outbound: Vec<String>,

    /// Directory with tls.crt (chain), tls.key and ca.crt, e.g. a mounted Secret.
    #[arg(long, env = "GEMBOK_CERT_DIR", value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Certificate chain (PEM), leaf first. Use with --key and --ca instead of --cert-dir.
    #[arg(long, env = "GEMBOK_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, env = "GEMBOK_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) that peers' certificates must chain to.
    #[arg(long, env = "GEMBOK_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Plaintext HTTP admin listener serving /metrics, /live and /ready.
    #[arg(
        long,
        env = "GEMBOK_ADMIN",
        default_value = "127.0.0.1:15700",
        value_name = "ADDR"
    )]
    pub admin: String,

    /// Client certificates on inbound listeners: required, optional or none.
    #[arg(long, env = "GEMBOK_INBOUND_CLIENT_AUTH", default_value = "required")]
    pub inbound_client_auth: String,

    /// Log level, or levels per target (e.g. `info`, `warn,gembok_proxy::conn=debug`).
    #[arg(long, env = "GEMBOK_LOG", default_value = "info")]
    pub log: String,
    /// Log format: text or json.
    #[arg(long, env = "GEMBOK_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Longest a TLS handshake may take.
    #[arg(long, env = "GEMBOK_HANDSHAKE_TIMEOUT", default_value = "10s")]
    pub handshake_timeout: String,
    /// Reuse an outbound route's resolved addresses for this long (0: look the host up for
    /// every connection). In a pod every lookup walks the search domains first.
    #[arg(long, env = "GEMBOK_DNS_CACHE", default_value = "5s")]
    pub dns_cache: String,
    /// Longest a TCP connect (to the app or to the peer) may take.
    #[arg(long, env = "GEMBOK_CONNECT_TIMEOUT", default_value = "5s")]
    pub connect_timeout: String,
    /// Close a connection after this long without a byte in either direction.
    #[arg(long, env = "GEMBOK_IDLE_TIMEOUT", default_value = "1h")]
    pub idle_timeout: String,
    /// Most concurrent connections per direction (inbound listeners together, outbound ones
    /// together), so stalled peers never hold the app's own slots; accepting waits beyond it.
    #[arg(long, env = "GEMBOK_MAX_CONNECTIONS", default_value = "10000")]
    pub max_connections: String,
    /// After SIGTERM, how long open connections may keep going before the process exits.
    #[arg(long, env = "GEMBOK_DRAIN_GRACE", default_value = "30s")]
    pub drain_grace: String,
    /// After SIGTERM, keep accepting new connections this long (`/ready` says 503 meanwhile),
    /// then drain: part of --drain-grace. For a sidecar stopped together with its app (classic
    /// mode), whose own shutdown may still call out.
    #[arg(long, env = "GEMBOK_DRAIN_DELAY", default_value = "0s")]
    pub drain_delay: String,
    /// Drain and exit 0 once the app's processes have all exited: for a classic (non-native)
    /// sidecar in a Job's pod, which then completes with no change to the app. Needs the pod to
    /// share its process namespace (`shareProcessNamespace: true`); the app's processes are those
    /// in other containers' cgroups.
    #[arg(long, env = "GEMBOK_EXIT_WITH_APP", default_value = "false", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub exit_with_app: String,

    /// Also accept and offer TLS 1.2 (ECDHE with AEAD suites only). Off: TLS 1.3 only.
    #[arg(long, env = "GEMBOK_TLS12", default_value = "false", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub tls12: String,
    /// Cryptography provider: aws-lc-rs or ring.
    #[arg(long, env = "GEMBOK_CRYPTO_PROVIDER", default_value = "aws-lc-rs")]
    pub crypto_provider: String,
    /// Which library encrypts and decrypts TLS records: aws-lc-rs, ring, or auto (the
    /// provider's own, except on x86-64 CPUs with VAES and AVX2 but no AVX-512, where ring has
    /// the faster AES-GCM). Key exchange and signatures always use --crypto-provider.
    #[arg(long, env = "GEMBOK_AEAD", default_value = "auto")]
    pub aead: String,
    /// TLS cipher suites offered and accepted, most preferred first (comma-separated; the
    /// inbound's order wins): TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384,
    /// TLS13_CHACHA20_POLY1305_SHA256 (IANA names such as TLS_AES_256_GCM_SHA384 too) and, with
    /// --tls12, TLS_ECDHE_{ECDSA,RSA}_WITH_{AES_128_GCM_SHA256,AES_256_GCM_SHA384,
    /// CHACHA20_POLY1305_SHA256}; or auto, all of them in that order. Every one is an AEAD suite.
    #[arg(long, env = "GEMBOK_CIPHER_SUITES", default_value = "auto")]
    pub cipher_suites: String,
    /// Key exchange groups offered and accepted, most preferred first (comma-separated):
    /// X25519MLKEM768, secp256r1MLKEM768, MLKEM768, MLKEM1024, X25519, secp256r1, secp384r1; or
    /// auto, the provider's own list (aws-lc-rs: X25519MLKEM768, X25519, secp256r1, secp384r1;
    /// ring: X25519, secp256r1, secp384r1). Naming only post-quantum groups refuses peers that
    /// cannot do post-quantum key exchange.
    #[arg(long, env = "GEMBOK_KEY_EXCHANGE", default_value = "auto")]
    pub key_exchange: String,
    /// ALPN protocols (comma-separated) offered on outbound routes and accepted on inbound
    /// listeners that do not set their own `alpn=`.
    #[arg(long, env = "GEMBOK_ALPN", default_value = "")]
    pub alpn: String,

    /// /ready fails when the served certificate expires within this margin.
    #[arg(long, env = "GEMBOK_CERT_EXPIRY_MARGIN", default_value = "1h")]
    pub cert_expiry_margin: String,
    /// Certificate revocation lists (comma-separated files, each with PEM `X509 CRL` blocks or one
    /// DER CRL): peers whose certificate, or an intermediate of it, is listed are refused on
    /// both sides. Watched and reloaded with the certificates; a bad list keeps the last good.
    #[arg(long, env = "GEMBOK_CRL", default_value = "", value_name = "FILES")]
    pub crl: String,
    /// Re-read certificate files at least this often (directory events are the fast path).
    #[arg(long, env = "GEMBOK_RELOAD_INTERVAL", default_value = "30s")]
    pub reload_interval: String,
    /// Kernel TLS data path: auto (use it when the kernel can, per connection), off, or
    /// require (exit 64 at start-up when the kernel has no kTLS).
    #[arg(long, env = "GEMBOK_KTLS", default_value = "auto")]
    pub ktls: String,
    /// Landlock self-sandbox and seccomp filters, applied before serving: auto (where the kernel
    /// can), off, or require (exit at start-up without them). Sandboxed, the proxy may only read
    /// beneath its certificate and allow-san directories, /etc and the library directories, may
    /// write, create, remove or execute no file, and may not run a program, trace another
    /// process or make a namespace.
    #[arg(long, env = "GEMBOK_SANDBOX", default_value = "auto")]
    pub sandbox: String,
    /// Rotate the sending key with a KeyUpdate (gembok's record layer; kTLS on kernels that can
    /// be rekeyed) or close the connection (kTLS otherwise) after this many records under one
    /// key; `auto` is the cipher's own limit (2^24 records for AES-GCM).
    #[arg(
        long,
        alias = "ktls-record-limit",
        env = "GEMBOK_RECORD_LIMIT",
        default_value = "auto"
    )]
    pub record_limit: String,
    /// Who protects records after the handshake when the kernel does not: gembok (its own
    /// TLS 1.3 record layer, which seals and opens records in place, without copying bytes in
    /// user space) or rustls (its buffered API; TLS 1.2 connections always use it); `auto` is
    /// gembok, and rustls in the FIPS build.
    #[arg(long, env = "GEMBOK_RECORD_LAYER", default_value = "auto")]
    pub record_layer: String,
    /// Runtime worker threads: a number, or `auto` (the CPUs this process may use).
    #[arg(long, env = "GEMBOK_WORKERS", default_value = "auto")]
    pub workers: String,
}

/// Reads the command line like clap, without stopping at the first unknown or malformed flag
/// ([`gembok_cliargs`]), so that one run of the proxy lists every problem (together with what
/// [`crate::config::Config::from_cli`] finds in the values).
pub fn parse(args: impl IntoIterator<Item = impl Into<OsString>>) -> Parsed<Cli> {
    gembok_cliargs::parse(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(args: &[&str]) -> Vec<String> {
        match parse(std::iter::once("gembok-proxy").chain(args.iter().copied())) {
            Parsed::Read(_, problems, _) | Parsed::Unreadable(problems) => problems,
            Parsed::Info(e) => panic!("unexpected --help/--version: {e}"),
        }
    }

    #[test]
    fn every_unknown_flag_is_reported_and_the_rest_still_parses() {
        let args = [
            "--frobnicate",
            "--inbound",
            "0.0.0.0:8443=127.0.0.1:80",
            "--outbund=x",
            "--idle-timeout",
            "5s",
            "--typo",
            "value-of-typo",
            "stray",
        ];
        let Parsed::Read(cli, problems, _) =
            parse(std::iter::once("gembok-proxy").chain(args.iter().copied()))
        else {
            panic!("parsed as --help");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].starts_with("--frobnicate: unknown flag"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("--outbund: unknown flag"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("did you mean --outbound"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("--typo: unknown flag"),
            "{problems:?}"
        );
        assert!(
            problems[3].starts_with("stray: unexpected word"),
            "{problems:?}"
        );
        assert_eq!(cli.proxy.inbound, ["0.0.0.0:8443=127.0.0.1:80"]);
        assert_eq!(cli.proxy.idle_timeout, "5s");
    }

    #[test]
    fn a_flag_without_its_value_is_named() {
        let problems = problems(&["--inbound", "0.0.0.0:1=127.0.0.1:2", "--cert-dir"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("--cert-dir"), "{problems:?}");
    }

    #[test]
    fn a_negative_value_is_the_value_of_its_flag() {
        let args = ["--drain-grace", "-5s", "--workers", "0", "--frobnicate"];
        let Parsed::Read(cli, problems, _) =
            parse(std::iter::once("gembok-proxy").chain(args.iter().copied()))
        else {
            panic!("not read");
        };
        assert_eq!(problems, ["--frobnicate: unknown flag"]);
        assert_eq!(cli.proxy.drain_grace, "-5s");
    }

    #[test]
    fn help_and_version_are_not_problems() {
        assert!(matches!(parse(["gembok-proxy", "--help"]), Parsed::Info(_)));
        assert!(matches!(
            parse(["gembok-proxy", "--version"]),
            Parsed::Info(_)
        ));
        assert!(problems(&[]).is_empty());
    }
}
