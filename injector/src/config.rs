//! The command line (docs/contracts.md section 3): clap reads flags and `GEMBOK_INJECTOR_*`
//! variables as plain strings, then [`Cli::validate`] turns them into typed configs, reporting
//! every problem at once (the binary exits 64 with the list).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gembok_net::sandbox::Mode;

use crate::annotations::SidecarMode;
use crate::inject::InjectorConfig;
use crate::policy::Unannotated;
use crate::sidecar::PullPolicy;

#[derive(Debug, Parser)]
#[command(
    name = "gembok-injector",
    version,
    about = "Injects the gembok-proxy sidecar into pods"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the mutating admission webhook (HTTPS POST /mutate) and the admin listener.
    Serve(Box<ServeArgs>),
    /// Inject pod templates in YAML (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
    /// CronJob) and write the result to stdout.
    Inject(InjectArgs),
    /// Find running pods the webhook would give the sidecar that lack it, or that run another
    /// sidecar image than it would give them now, in `kubectl get namespaces,pods -A -o yaml`
    /// (exit 1 when any is found)
    Audit(AuditArgs),
}

/// Options both subcommands share.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Sidecar image when the pod has no gembok.io/image [default: ghcr.io/gembok/gembok-proxy:<version>]
    #[arg(long, env = "GEMBOK_INJECTOR_PROXY_IMAGE")]
    pub proxy_image: Option<String>,
    /// Sidecar image for pods annotated gembok.io/fips: "true" and no gembok.io/image: the
    /// proxy's FIPS build [default: ghcr.io/gembok/gembok-proxy:<version>-fips]
    #[arg(long, env = "GEMBOK_INJECTOR_PROXY_IMAGE_FIPS")]
    pub proxy_image_fips: Option<String>,
    /// imagePullPolicy of the sidecar: `Always`, `IfNotPresent` or `Never`
    #[arg(
        long,
        env = "GEMBOK_INJECTOR_PROXY_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub proxy_pull_policy: String,
    /// runAsUser and runAsGroup of the sidecar: a non-zero UID, or `none` to leave them to the
    /// pod's securityContext and the platform (OpenShift's restricted-v2 SCC assigns a UID from
    /// the namespace's range; elsewhere the image's 65532 applies)
    #[arg(long, env = "GEMBOK_INJECTOR_PROXY_UID", default_value = "65532")]
    pub proxy_uid: String,
    /// `native` (init container with restartPolicy Always, Kubernetes 1.29+) or `classic`
    #[arg(long, env = "GEMBOK_INJECTOR_SIDECAR_MODE", default_value = "native")]
    pub sidecar_mode: String,
    /// A pod with neither gembok.io/inbound nor gembok.io/outbound: `skip` (allowed without the
    /// sidecar, with a warning) or `deny` (refused, naming the annotations to add)
    #[arg(long, env = "GEMBOK_INJECTOR_UNANNOTATED_PODS", default_value = "skip")]
    pub unannotated_pods: String,
    /// `true`: every pod without gembok.io/fips gets the proxy's FIPS build
    /// (--proxy-image-fips), and FIPS-approved suites and groups only; `false`: only pods
    /// annotated gembok.io/fips: "true" do
    #[arg(long, env = "GEMBOK_INJECTOR_FIPS", default_value = "false")]
    pub fips: String,
    /// Log level or tracing filter directive
    #[arg(long, env = "GEMBOK_INJECTOR_LOG", default_value = "info")]
    pub log: String,
    /// `text` or `json`
    #[arg(long, env = "GEMBOK_INJECTOR_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTPS address for POST /mutate
    #[arg(long, env = "GEMBOK_INJECTOR_LISTEN", default_value = "[::]:8443")]
    pub listen: String,
    /// Directory with tls.crt and tls.key (a mounted cert-manager Secret)
    #[arg(long, env = "GEMBOK_INJECTOR_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Serving certificate chain (PEM), with --key instead of --cert-dir
    #[arg(long, env = "GEMBOK_INJECTOR_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for --cert
    #[arg(long, env = "GEMBOK_INJECTOR_KEY")]
    pub key: Option<PathBuf>,
    /// Plaintext address for /live, /ready and /metrics
    #[arg(long, env = "GEMBOK_INJECTOR_ADMIN", default_value = "[::]:15780")]
    pub admin: String,
    /// After SIGTERM: how long /ready reports 503 while requests are still served, so the
    /// endpoint is removed before the listener closes
    #[arg(long, env = "GEMBOK_INJECTOR_SHUTDOWN_DELAY", default_value = "5s")]
    pub shutdown_delay: String,
    /// After the listener closes: how long in-flight requests may take to finish
    #[arg(long, env = "GEMBOK_INJECTOR_DRAIN_GRACE", default_value = "10s")]
    pub drain_grace: String,
    /// Time allowed for the TLS handshake, and then for each request's headers
    #[arg(long, env = "GEMBOK_INJECTOR_HEADER_TIMEOUT", default_value = "10s")]
    pub header_timeout: String,
    /// Time allowed for a request body to arrive once its headers have (then HTTP 408)
    #[arg(long, env = "GEMBOK_INJECTOR_BODY_TIMEOUT", default_value = "10s")]
    pub body_timeout: String,
    /// Webhook connections open at once; further connections wait to be accepted
    #[arg(long, env = "GEMBOK_INJECTOR_MAX_CONNECTIONS", default_value = "1000")]
    pub max_connections: String,
    /// Landlock self-sandbox and seccomp filters: `auto` (where the kernel can, else a warning),
    /// `off`, or `require` (exit 1 without them). Reads only its certificate, binds only its two
    /// ports, connects nowhere, runs no program
    #[arg(long, env = "GEMBOK_INJECTOR_SANDBOX", default_value = "auto")]
    pub sandbox: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// YAML file to read, or - for stdin
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    pub file: String,
    /// Print, per object, whether it would be injected and why, instead of the YAML
    #[arg(long)]
    pub explain: bool,
    /// Treat every namespace as Istio-injected (Namespace objects in the input are read anyway)
    #[arg(long)]
    pub istio: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// YAML to read (`kubectl get namespaces,pods -A -o yaml`), or - for stdin
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    pub file: String,
    /// `text` (one line per pod to fix) or `json` (one object: counts and findings, for
    /// automation)
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How logs are written (always to stderr: `inject` writes YAML to stdout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

/// Where the webhook's serving certificate is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertPaths {
    Dir(PathBuf),
    Files { cert: PathBuf, key: PathBuf },
}

impl CertPaths {
    /// The same files as `gembok-certwatch` reads them (the API server presents no client
    /// certificate, so no CA file is named).
    pub fn source(&self) -> gembok_certwatch::CertSource {
        match self {
            Self::Dir(dir) => gembok_certwatch::CertSource::Dir(dir.clone()),
            Self::Files { cert, key } => gembok_certwatch::CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
                ca: None,
            },
        }
    }
}

/// The most `--max-connections` takes (above it a typo, and past tokio's semaphore limit a panic
/// at start instead of exit 64).
pub const MAX_CONNECTIONS: usize = 10_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub cert: CertPaths,
    pub shutdown_delay: Duration,
    pub drain_grace: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub sandbox: Mode,
    /// What `--sandbox` achieved (main sets it once enforced): `gembok_injector_sandbox_info`.
    pub sandboxed: gembok_net::sandbox::Achieved,
    pub injector: InjectorConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectConfig {
    /// `None` for stdin.
    pub file: Option<PathBuf>,
    pub explain: bool,
    pub istio: bool,
    pub injector: InjectorConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// `None` for stdin.
    pub file: Option<PathBuf>,
    pub output: AuditOutput,
    pub injector: InjectorConfig,
    pub log: LogConfig,
}

/// How `audit` writes its findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutput {
    Text,
    Json,
}

/// A validated command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Config {
    Serve(ServeConfig),
    Inject(InjectConfig),
    Audit(AuditConfig),
}

impl Cli {
    /// Every problem with the values, not just the first.
    pub fn validate(self) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        match self.command {
            Command::Serve(args) => {
                let args = *args;
                let (injector, log) = common(&args.common, &mut errors);
                let listen = addr("--listen", &args.listen, &mut errors);
                let admin = addr("--admin", &args.admin, &mut errors);
                if listen.is_some_and(|a| a.port() != 0) && listen == admin {
                    errors.push(format!("--listen, --admin: both are {}", args.listen));
                }
                let cert = match (args.cert_dir, args.cert, args.key) {
                    (Some(dir), None, None) => Some(CertPaths::Dir(dir)),
                    (None, Some(cert), Some(key)) => Some(CertPaths::Files { cert, key }),
                    (None, None, None) => {
                        errors.push("give --cert-dir DIR or --cert FILE --key FILE".into());
                        None
                    }
                    (Some(_), _, _) => {
                        errors.push("--cert-dir cannot be combined with --cert/--key".into());
                        None
                    }
                    (None, _, _) => {
                        errors.push("--cert and --key must be given together".into());
                        None
                    }
                };
                let shutdown_delay =
                    duration("--shutdown-delay", &args.shutdown_delay, &mut errors);
                let drain_grace = duration("--drain-grace", &args.drain_grace, &mut errors);
                let header_timeout =
                    positive_duration("--header-timeout", &args.header_timeout, &mut errors);
                let body_timeout =
                    positive_duration("--body-timeout", &args.body_timeout, &mut errors);
                let max_connections = match args.max_connections.parse::<usize>() {
                    Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Some(n),
                    Ok(n) if n > MAX_CONNECTIONS => {
                        errors.push(format!(
                            "--max-connections: {n} is more than the most this takes, {MAX_CONNECTIONS}"
                        ));
                        None
                    }
                    _ => {
                        errors.push(format!(
                            "--max-connections: {:?} is not a whole number above 0",
                            args.max_connections
                        ));
                        None
                    }
                };
                let sandbox = args
                    .sandbox
                    .parse::<Mode>()
                    .map_err(|e| errors.push(format!("--sandbox: {e}")))
                    .ok();
                // A value is missing only if its problem is in `errors`, but `errors` can also
                // hold problems with values that parsed (the common flags, --listen == --admin).
                let config = (|| {
                    Some(ServeConfig {
                        listen: listen?,
                        admin: admin?,
                        cert: cert?,
                        shutdown_delay: shutdown_delay?,
                        drain_grace: drain_grace?,
                        header_timeout: header_timeout?,
                        body_timeout: body_timeout?,
                        max_connections: max_connections?,
                        sandbox: sandbox?,
                        sandboxed: gembok_net::sandbox::Achieved::OFF,
                        injector,
                        log,
                    })
                })();
                match config {
                    Some(config) if errors.is_empty() => Ok(Config::Serve(config)),
                    _ => Err(errors),
                }
            }
            Command::Audit(args) => {
                let (injector, log) = common(&args.common, &mut errors);
                let file = input_file(&args.file, &mut errors);
                let output = if is_json("--output", &args.output, &mut errors) {
                    AuditOutput::Json
                } else {
                    AuditOutput::Text
                };
                if errors.is_empty() {
                    Ok(Config::Audit(AuditConfig {
                        file,
                        output,
                        injector,
                        log,
                    }))
                } else {
                    Err(errors)
                }
            }
            Command::Inject(args) => {
                let (injector, log) = common(&args.common, &mut errors);
                let file = input_file(&args.file, &mut errors);
                if errors.is_empty() {
                    Ok(Config::Inject(InjectConfig {
                        file,
                        explain: args.explain,
                        istio: args.istio,
                        injector,
                        log,
                    }))
                } else {
                    Err(errors)
                }
            }
        }
    }
}

/// `-f FILE|-`: `None` for stdin.
fn input_file(file: &str, errors: &mut Vec<String>) -> Option<PathBuf> {
    match file {
        "-" => None,
        "" => {
            errors.push("-f needs a file name or -".into());
            None
        }
        path => Some(PathBuf::from(path)),
    }
}

/// A `text|json` flag: true for json; anything else is an error (and text).
fn is_json(flag: &str, value: &str, errors: &mut Vec<String>) -> bool {
    match value {
        "text" => false,
        "json" => true,
        other => {
            errors.push(format!("{flag}: {other:?} is not text or json"));
            false
        }
    }
}

fn common(args: &CommonArgs, errors: &mut Vec<String>) -> (InjectorConfig, LogConfig) {
    let mut injector = InjectorConfig::default();
    for (flag, given, slot) in [
        (
            "--proxy-image",
            &args.proxy_image,
            &mut injector.proxy_image,
        ),
        (
            "--proxy-image-fips",
            &args.proxy_image_fips,
            &mut injector.proxy_image_fips,
        ),
    ] {
        if let Some(image) = given {
            match crate::image::check(image) {
                Ok(()) => *slot = image.clone(),
                Err(why) => errors.push(format!(
                    "{flag}: {image:?} is not an image reference: {why}"
                )),
            }
        }
    }
    match args.proxy_uid.as_str() {
        "none" => injector.proxy_uid = None,
        uid => match uid.parse::<i64>() {
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => injector.proxy_uid = Some(n),
            Ok(0) => errors.push("--proxy-uid: 0 is root; the proxy runs as non-root".into()),
            _ => errors.push(format!(
                "--proxy-uid: {uid:?} is not a UID (1-2147483647) or none"
            )),
        },
    }
    match args.sidecar_mode.parse::<SidecarMode>() {
        Ok(mode) => injector.sidecar_mode = mode,
        Err(e) => errors.push(format!("--sidecar-mode: {e}")),
    }
    match args.proxy_pull_policy.parse::<PullPolicy>() {
        Ok(policy) => injector.proxy_pull_policy = policy,
        Err(e) => errors.push(format!("--proxy-pull-policy: {e}")),
    }
    match args.unannotated_pods.parse::<Unannotated>() {
        Ok(policy) => injector.unannotated = policy,
        Err(e) => errors.push(format!("--unannotated-pods: {e}")),
    }
    match args.fips.as_str() {
        "true" => injector.fips = true,
        "false" => injector.fips = false,
        other => errors.push(format!("--fips: {other:?} is not true or false")),
    }
    let format = if is_json("--log-format", &args.log_format, errors) {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    if let Err(e) = args.log.parse::<tracing_subscriber::filter::Targets>() {
        errors.push(format!(
            "--log: {:?} is not a level or filter directive: {e}",
            args.log
        ));
    }
    (
        injector,
        LogConfig {
            filter: args.log.clone(),
            format,
        },
    )
}

fn addr(flag: &str, value: &str, errors: &mut Vec<String>) -> Option<SocketAddr> {
    value
        .parse()
        .map_err(|_| errors.push(format!("{flag}: {value:?} is not an IP:PORT address")))
        .ok()
}

fn duration(flag: &str, value: &str, errors: &mut Vec<String>) -> Option<Duration> {
    humantime::parse_duration(value)
        .map_err(|e| errors.push(format!("{flag}: {value:?} is not a duration like 10s: {e}")))
        .ok()
}

/// A duration above zero: a zero timeout would refuse every request.
fn positive_duration(flag: &str, value: &str, errors: &mut Vec<String>) -> Option<Duration> {
    match duration(flag, value, errors)? {
        Duration::ZERO => {
            errors.push(format!("{flag}: must be longer than 0s"));
            None
        }
        d => Some(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, Vec<String>> {
        let cli =
            Cli::try_parse_from(std::iter::once("gembok-injector").chain(args.iter().copied()))
                .expect("clap accepts the shape");
        cli.validate()
    }

    #[test]
    fn serve_defaults_match_the_contract() {
        let Ok(Config::Serve(config)) = parse(&["serve", "--cert-dir", "certs"]) else {
            panic!("valid")
        };
        assert_eq!(config.listen, "[::]:8443".parse().unwrap());
        assert_eq!(config.admin, "[::]:15780".parse().unwrap());
        assert_eq!(config.cert, CertPaths::Dir("certs".into()));
        assert_eq!(config.injector.sidecar_mode, SidecarMode::Native);
        assert_eq!(config.injector.proxy_pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(config.injector.unannotated, Unannotated::Skip);
        assert_eq!(config.header_timeout, Duration::from_secs(10));
        assert_eq!(config.body_timeout, Duration::from_secs(10));
        assert_eq!(config.max_connections, 1000);
        assert_eq!(
            config.injector.proxy_image,
            format!("ghcr.io/gembok/gembok-proxy:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            config.injector.proxy_image_fips,
            format!(
                "ghcr.io/gembok/gembok-proxy:{}-fips",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn reports_every_bad_value_at_once() {
        let errors = parse(&[
            "serve",
            "--listen",
            "nowhere",
            "--admin",
            "1.2.3.4",
            "--cert",
            "c.pem",
            "--sidecar-mode",
            "sidecar",
            "--log-format",
            "xml",
            "--drain-grace",
            "soon",
            "--proxy-pull-policy",
            "always",
            "--unannotated-pods",
            "reject",
            "--body-timeout",
            "0s",
            "--header-timeout",
            "ten",
            "--max-connections",
            "0",
            "--proxy-image-fips",
            "Gembok Proxy",
            "--fips",
            "yes",
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 13, "{errors:#?}");
        for flag in [
            "--listen",
            "--admin",
            "--cert and --key",
            "--sidecar-mode",
            "--log-format",
            "--drain-grace",
            "--proxy-pull-policy",
            "--unannotated-pods",
            "--body-timeout",
            "--header-timeout",
            "--max-connections",
            "--proxy-image-fips",
            "--fips",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(flag)),
                "nothing about {flag}: {errors:#?}"
            );
        }
    }

    #[test]
    fn a_connection_limit_beyond_what_a_process_can_hold_is_refused() {
        let errors = parse(&["serve", "--max-connections", "2305843009213693952"]).unwrap_err();
        assert!(
            errors.iter().any(|e| e
                == "--max-connections: 2305843009213693952 is more than the most this takes, 10000000"),
            "{errors:#?}"
        );
    }

    #[test]
    fn injector_wide_policies_come_from_flags_or_env() {
        let Ok(Config::Inject(config)) = parse(&[
            "inject",
            "-f",
            "-",
            "--proxy-pull-policy",
            "Always",
            "--unannotated-pods",
            "deny",
        ]) else {
            panic!("valid")
        };
        assert_eq!(config.injector.proxy_pull_policy, PullPolicy::Always);
        assert_eq!(config.injector.unannotated, Unannotated::Deny);
        assert_eq!(config.injector.proxy_uid, Some(65532), "the default");
    }

    #[test]
    fn the_proxy_uid_is_a_non_root_uid_or_none() {
        let uid = |value: &str| match parse(&["inject", "-f", "-", "--proxy-uid", value]) {
            Ok(Config::Inject(config)) => Ok(config.injector.proxy_uid),
            Ok(other) => panic!("{other:?}"),
            Err(errors) => Err(errors.join("; ")),
        };
        assert_eq!(uid("1000700000"), Ok(Some(1_000_700_000)));
        assert_eq!(uid("none"), Ok(None));
        assert!(uid("0").unwrap_err().contains("0 is root"));
        for bad in ["1.5", "nobody", "4294967296"] {
            let err = uid(bad).unwrap_err();
            assert!(
                err.contains("is not a UID (1-2147483647) or none"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn inject_reads_stdin_for_dash() {
        let Ok(Config::Inject(config)) = parse(&["inject", "-f", "-", "--explain"]) else {
            panic!("valid")
        };
        assert_eq!(config.file, None);
        assert!(config.explain);
    }
}
