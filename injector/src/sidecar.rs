//! Pure builders for what gets added to a pod: the `gembok-proxy` container and its certificate
//! volume (and allow-list ConfigMap volume), from a resolved [`Plan`]. The proxy is configured only through `GEMBOK_*` environment
//! variables (docs/contracts.md section 1), so the container has no `args`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, ExecAction,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::{InboundMapping, OutboundRoute, SidecarMode};

pub const CONTAINER_NAME: &str = "gembok-proxy";
pub const VOLUME_NAME: &str = "gembok-certs";
pub const CERT_MOUNT_PATH: &str = "/etc/gembok/certs";
/// A file the proxy reloads from a ConfigMap that a pod names in an annotation: the volume the
/// injector adds for it, where that is mounted and the ConfigMap key mapped there.
#[derive(Debug, PartialEq, Eq)]
pub struct ListVolume {
    pub annotation: &'static str,
    pub volume: &'static str,
    pub mount_path: &'static str,
    pub key: &'static str,
}

impl ListVolume {
    /// Where the proxy reads the list.
    pub fn file(&self) -> String {
        format!("{}/{}", self.mount_path, self.key)
    }
}

/// `gembok.io/allowed-sans-configmap`: more SAN patterns, one per line (`allow-san-file=`).
pub const ALLOWED_SANS_LIST: ListVolume = ListVolume {
    annotation: crate::annotations::ALLOWED_SANS_CONFIGMAP,
    volume: "gembok-allowed-sans",
    mount_path: "/etc/gembok/allowed-sans",
    key: "allowed-sans",
};
pub const ALLOWED_SANS_KEY: &str = ALLOWED_SANS_LIST.key;
/// `gembok.io/crl-configmap`: certificate revocation lists (`GEMBOK_CRL`).
pub const CRL_LIST: ListVolume = ListVolume {
    annotation: crate::annotations::CRL_CONFIGMAP,
    volume: "gembok-crl",
    mount_path: "/etc/gembok/crl",
    key: "ca.crl",
};
pub const ADMIN_PORT: u16 = 15700;
pub const ADMIN_PORT_NAME: &str = "gembok-admin";
/// The distroless `nonroot` user, the default of `--proxy-uid`; any fixed non-zero UID works, a
/// fixed one makes file permissions predictable.
pub const PROXY_UID: i64 = 65532;
/// How long the app is held (classic mode) or the pod waits (native startup probe) for `/ready`.
pub const STARTUP_SECONDS: i32 = 120;

pub const DEFAULT_CPU_REQUEST: &str = "100m";
pub const DEFAULT_CPU_LIMIT: &str = "1";
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
pub const DEFAULT_MEMORY_LIMIT: &str = "256Mi";

/// `imagePullPolicy` of the sidecar (`--proxy-pull-policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Always" => Ok(Self::Always),
            "IfNotPresent" => Ok(Self::IfNotPresent),
            "Never" => Ok(Self::Never),
            other => Err(format!(
                "{other:?} is not an image pull policy (Always, IfNotPresent or Never)"
            )),
        }
    }
}

/// Resolved resources (annotation or default), already checked: request <= limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
}

/// Everything needed to build the sidecar, after annotations and defaults were merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub mode: SidecarMode,
    pub image: String,
    pub pull_policy: PullPolicy,
    /// Inbound mappings with `gembok.io/allowed-sans` already merged in.
    pub inbound: Vec<InboundMapping>,
    pub outbound: Vec<OutboundRoute>,
    pub cert_secret: String,
    /// `gembok.io/allowed-sans-configmap` ([`ALLOWED_SANS_LIST`]).
    pub allowed_sans_configmap: Option<String>,
    /// `gembok.io/crl-configmap` ([`CRL_LIST`]), named in `GEMBOK_CRL`.
    pub crl_configmap: Option<String>,
    pub log_level: Option<String>,
    pub resources: Resources,
    pub drain_seconds: Option<u32>,
    /// `GEMBOK_KEY_EXCHANGE`, when the pod names its groups.
    pub key_exchange: Option<String>,
    /// `GEMBOK_CIPHER_SUITES`, when the pod names its suites.
    pub cipher_suites: Option<String>,
    /// `gembok.io/fips: "true"`: `image` is the proxy's FIPS build.
    pub fips: bool,
    /// The pod is (or will be) Istio-injected: the proxy's probes must be exec probes.
    pub istio: bool,
    /// `runAsUser`/`runAsGroup`, or left to the pod and the platform.
    pub run_as: Option<i64>,
    /// A classic sidecar in a pod that runs once (`restartPolicy: Never`): the pod shares its
    /// process namespace and the proxy exits when the app's processes have (`GEMBOK_EXIT_WITH_APP`).
    pub exit_with_app: bool,
}

/// Name of the container port for the `index`-th (0-based) inbound mapping: `gembok-tls-1`, ...
/// Port names are limited to 15 characters, too short for `gembok-tls-` plus a 5-digit port.
pub fn tls_port_name(index: usize) -> String {
    format!("gembok-tls-{}", index + 1)
}

/// `GEMBOK_INBOUND`: `[::]:TLSPORT=127.0.0.1:APPPORT[,allow-san=P]...[,allow-san-file=F]
/// [,proxy-protocol=v2]`
/// joined by `;`. `[::]`
/// serves IPv4 and IPv6 peers alike, so single-stack IPv6 pods are reachable too (the proxy
/// falls back to `0.0.0.0` where the kernel has no IPv6).
pub fn inbound_env(inbound: &[InboundMapping]) -> String {
    let entries: Vec<String> = inbound
        .iter()
        .map(|m| {
            let mut entry = format!("[::]:{}=127.0.0.1:{}", m.tls_port, m.app_port);
            for san in &m.allow_sans {
                entry.push_str(",allow-san=");
                entry.push_str(san);
            }
            if let Some(file) = &m.allow_san_file {
                entry.push_str(",allow-san-file=");
                entry.push_str(file);
            }
            if m.proxy_protocol {
                entry.push_str(",proxy-protocol=v2");
            }
            entry
        })
        .collect();
    entries.join(";")
}

/// `GEMBOK_OUTBOUND`: `127.0.0.1:LOCALPORT=HOST:PORT[,server-name=N][,alpn=P]...` joined by `;`.
pub fn outbound_env(outbound: &[OutboundRoute]) -> String {
    let entries: Vec<String> = outbound
        .iter()
        .map(|r| {
            let mut entry = format!("127.0.0.1:{}={}:{}", r.local_port, r.host, r.port);
            if let Some(name) = &r.server_name {
                entry.push_str(",server-name=");
                entry.push_str(name);
            }
            for proto in &r.alpn {
                entry.push_str(",alpn=");
                entry.push_str(proto);
            }
            entry
        })
        .collect();
    entries.join(";")
}

/// gembok-proxy's `--drain-grace` default, in seconds.
pub const PROXY_DRAIN_GRACE_SECONDS: u32 = 30;

/// How long a classic sidecar keeps accepting after SIGTERM (at most half its drain grace).
const CLASSIC_DRAIN_DELAY_SECONDS: u32 = 5;

/// The `gembok-proxy` container for either mode. The caller places it.
pub fn container(plan: &Plan) -> Container {
    let mut env = Vec::new();
    let mut push = |name: &str, value: String| {
        env.push(EnvVar {
            name: name.to_owned(),
            value: Some(value),
            value_from: None,
        });
    };
    if !plan.inbound.is_empty() {
        push("GEMBOK_INBOUND", inbound_env(&plan.inbound));
    }
    if !plan.outbound.is_empty() {
        push("GEMBOK_OUTBOUND", outbound_env(&plan.outbound));
    }
    push("GEMBOK_CERT_DIR", CERT_MOUNT_PATH.to_owned());
    if plan.crl_configmap.is_some() {
        push("GEMBOK_CRL", CRL_LIST.file());
    }
    // Kubelet probes and Prometheus reach the admin port on the pod IP, not loopback.
    push("GEMBOK_ADMIN", format!("[::]:{ADMIN_PORT}"));
    if let Some(level) = &plan.log_level {
        push("GEMBOK_LOG", level.clone());
    }
    if let Some(seconds) = plan.drain_seconds {
        push("GEMBOK_DRAIN_GRACE", format!("{seconds}s"));
    }
    if plan.mode == SidecarMode::Classic {
        // A classic sidecar gets SIGTERM together with the app: it keeps serving the app's last
        // calls (and peers that have not yet seen /ready turn 503) for a few seconds, as part of
        // its drain grace period.
        let grace = plan.drain_seconds.unwrap_or(PROXY_DRAIN_GRACE_SECONDS);
        let delay = (grace / 2).min(CLASSIC_DRAIN_DELAY_SECONDS);
        if delay > 0 {
            push("GEMBOK_DRAIN_DELAY", format!("{delay}s"));
        }
    }
    if let Some(groups) = &plan.key_exchange {
        push("GEMBOK_KEY_EXCHANGE", groups.clone());
    }
    if let Some(suites) = &plan.cipher_suites {
        push("GEMBOK_CIPHER_SUITES", suites.clone());
    }
    if plan.exit_with_app {
        push("GEMBOK_EXIT_WITH_APP", "true".to_owned());
    }

    let mut ports = vec![ContainerPort {
        name: Some(ADMIN_PORT_NAME.to_owned()),
        container_port: i32::from(ADMIN_PORT),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }];
    ports.extend(plan.inbound.iter().enumerate().map(|(i, m)| ContainerPort {
        name: Some(tls_port_name(i)),
        container_port: i32::from(m.tls_port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }));

    let (restart_policy, lifecycle) = match plan.mode {
        SidecarMode::Native => (Some("Always".to_owned()), None),
        // The kubelet starts regular containers in order and does not start the next one until
        // this hook returns, so the app starts only once the proxy reports ready.
        SidecarMode::Classic => (
            None,
            Some(Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(wait_ready_command()),
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
        ),
    };

    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(plan.image.clone()),
        image_pull_policy: Some(plan.pull_policy.as_str().to_owned()),
        restart_policy,
        lifecycle,
        env: Some(env),
        ports: Some(ports),
        startup_probe: Some(probe(plan, "/ready", 1, STARTUP_SECONDS)),
        liveness_probe: Some(probe(plan, "/live", 10, 3)),
        readiness_probe: Some(probe(plan, "/ready", 5, 3)),
        resources: Some(resources(&plan.resources)),
        security_context: Some(security_context(plan.run_as)),
        volume_mounts: Some(volume_mounts(plan)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// The classic-mode postStart hook: `gembok-proxy wait-ready` (docs/contracts.md section 1).
pub fn wait_ready_command() -> Vec<String> {
    wait_ready_args(&format!("{STARTUP_SECONDS}s"), "/ready")
}

/// `gembok-proxy wait-ready` on this pod's admin port, for `path` (the default `/ready` is left
/// out, as older proxies know no `--path`).
fn wait_ready_args(timeout: &str, path: &str) -> Vec<String> {
    let admin = format!("127.0.0.1:{ADMIN_PORT}");
    let mut args = [
        "gembok-proxy",
        "wait-ready",
        "--admin",
        &admin,
        "--timeout",
        timeout,
    ]
    .map(str::to_owned)
    .to_vec();
    if path != "/ready" {
        args.extend(["--path".to_owned(), path.to_owned()]);
    }
    args
}

fn volume_mounts(plan: &Plan) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let mut mounts = vec![mount(VOLUME_NAME, CERT_MOUNT_PATH)];
    mounts.extend(
        plan.lists()
            .map(|(list, _)| mount(list.volume, list.mount_path)),
    );
    mounts
}

/// The certificate Secret, mounted read-only; a missing Secret keeps the pod pending with a
/// clear event rather than starting a proxy that cannot serve. With
/// `gembok.io/allowed-sans-configmap` and `gembok.io/crl-configmap`, that ConfigMap's
/// `allowed-sans` or `ca.crl` key too, as a volume (not `subPath`: the kubelet updates a volume
/// in place, which the proxy reloads) that must exist (a pod whose list is missing stays
/// pending instead of admitting anyone).
pub fn volumes(plan: &Plan) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: VOLUME_NAME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(plan.cert_secret.clone()),
            // Readable by the proxy's UID without an fsGroup; nothing may write.
            default_mode: Some(0o444),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }];
    // Must exist: a pod whose list is missing stays pending instead of admitting anyone the
    // list would refuse, or revoked peers.
    volumes.extend(plan.lists().map(|(list, name)| Volume {
        name: list.volume.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.to_owned(),
            items: Some(vec![KeyToPath {
                key: list.key.to_owned(),
                path: list.key.to_owned(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(0o444),
            optional: Some(false),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }));
    volumes
}

/// The pod's container (app or init) named [`CONTAINER_NAME`], if it has one.
pub fn proxy_container(spec: &PodSpec) -> Option<&Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == CONTAINER_NAME)
}

/// Where the proxy reads the `gembok.io/allowed-sans-configmap` list.
pub fn allowed_sans_file() -> String {
    ALLOWED_SANS_LIST.file()
}

impl Plan {
    /// The ConfigMap lists this pod names, each with its ConfigMap.
    pub fn lists(&self) -> impl Iterator<Item = (&'static ListVolume, &str)> {
        [
            (&ALLOWED_SANS_LIST, &self.allowed_sans_configmap),
            (&CRL_LIST, &self.crl_configmap),
        ]
        .into_iter()
        .filter_map(|(list, name)| Some((list, name.as_deref()?)))
    }
}

/// A probe of the admin endpoint `path`. An HTTP probe, except in pods Istio injects: Istio
/// rewrites every HTTP, TCP and gRPC probe of the other containers, init containers included,
/// to go through its agent (`:15020/app-health/...`). In Istio's classic mode that agent starts
/// only after the init containers, so a native gembok-proxy would never pass its startup probe
/// and the pod would stay in Init; in any mode the proxy's liveness would hang on Istio's
/// agent. Exec probes (`gembok-proxy wait-ready`, one attempt of at most 1 s) are left alone.
fn probe(plan: &Plan, path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    let (http_get, exec, timeout) = match plan.istio {
        false => {
            let get = HTTPGetAction {
                path: Some(path.to_owned()),
                port: IntOrString::Int(i32::from(ADMIN_PORT)),
                scheme: Some("HTTP".to_owned()),
                ..HTTPGetAction::default()
            };
            (Some(get), None, 1)
        }
        true => {
            let command = wait_ready_args("1s", path);
            (
                None,
                Some(ExecAction {
                    command: Some(command),
                }),
                2,
            )
        }
    };
    Probe {
        http_get,
        exec,
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(timeout),
        ..Probe::default()
    }
}

fn resources(r: &Resources) -> ResourceRequirements {
    let map = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(map(&r.cpu_request, &r.memory_request)),
        limits: Some(map(&r.cpu_limit, &r.memory_limit)),
        ..ResourceRequirements::default()
    }
}

fn security_context(run_as: Option<i64>) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: run_as,
        run_as_group: run_as,
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_follow_the_proxy_contract() {
        let inbound = vec![
            InboundMapping {
                tls_port: 8443,
                app_port: 8080,
                allow_sans: vec!["a".into(), "b".into()],
                allow_san_file: None,
                proxy_protocol: false,
            },
            InboundMapping {
                tls_port: 9443,
                app_port: 9090,
                allow_sans: vec![],
                allow_san_file: Some(allowed_sans_file()),
                proxy_protocol: true,
            },
        ];
        assert_eq!(
            inbound_env(&inbound),
            "[::]:8443=127.0.0.1:8080,allow-san=a,allow-san=b;\
             [::]:9443=127.0.0.1:9090,allow-san-file=/etc/gembok/allowed-sans/allowed-sans,proxy-protocol=v2"
        );
        let outbound = vec![OutboundRoute {
            local_port: 15701,
            host: "rec.ns.svc.cluster.local".into(),
            port: 8443,
            server_name: Some("rec".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
        }];
        assert_eq!(
            outbound_env(&outbound),
            "127.0.0.1:15701=rec.ns.svc.cluster.local:8443,server-name=rec,alpn=h2,alpn=http/1.1"
        );
    }

    #[test]
    fn port_names_fit_the_15_character_limit() {
        assert!(tls_port_name(98).len() <= 15);
        assert_eq!(tls_port_name(0), "gembok-tls-1");
    }
}
