//! The pure core: a typed Pod in; the injected Pod, warnings, and a skip reason or the
//! annotation errors out. No I/O. Both edges (the webhook and `inject`) call [`inject`].
//!
//! Order of work: [`policy::precheck`] (opt-out, already injected, hostNetwork, name clashes) →
//! read the annotations → check ports against each other and the pod → resolve a
//! [`sidecar::Plan`] → add the container, the volume and the status annotation → Istio
//! exclusions → warnings about risky combinations.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde::Serialize;

use crate::annotations::{
    self, ALLOWED_SANS, ALLOWED_SANS_CONFIGMAP, AnnotationError, CERT_SECRET, CPU_LIMIT,
    CPU_REQUEST, DRAIN_SECONDS, INBOUND, INJECT_LABEL, MEMORY_LIMIT, MEMORY_REQUEST, OUTBOUND,
    PodSettings, STATUS, SidecarMode,
};
use crate::policy::{self, SkipReason, Unannotated};
use crate::sidecar::{self, ADMIN_PORT, CONTAINER_NAME, Plan, PullPolicy, Resources, VOLUME_NAME};
use crate::{istio, quantity};

/// The container `kubectl logs`, `exec` and `attach` use when none is named.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Injector-wide settings (from the command line); pod annotations override them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectorConfig {
    pub proxy_image: String,
    /// The proxy's FIPS build, for pods on it (`fips`, `gembok.io/fips`).
    pub proxy_image_fips: String,
    /// `--fips`: whether a pod without `gembok.io/fips` gets the FIPS build.
    pub fips: bool,
    pub proxy_pull_policy: PullPolicy,
    pub sidecar_mode: SidecarMode,
    /// What happens to a pod with neither `gembok.io/inbound` nor `gembok.io/outbound`.
    pub unannotated: Unannotated,
    /// `runAsUser`/`runAsGroup` of the sidecar (`--proxy-uid`); `None` leaves them to the pod's
    /// securityContext, the platform (OpenShift's SCC assigns one from the namespace's range) or
    /// the image (65532).
    pub proxy_uid: Option<i64>,
}

impl InjectorConfig {
    /// Whether a pod with these settings runs the proxy's FIPS build: its `gembok.io/fips`,
    /// else `--fips`.
    pub fn fips_for(&self, settings: &PodSettings) -> bool {
        settings.fips.unwrap_or(self.fips)
    }

    /// The sidecar image a pod with these settings gets: its `gembok.io/image`, else
    /// `--proxy-image-fips` on the FIPS build ([`InjectorConfig::fips_for`]), else
    /// `--proxy-image`.
    pub fn image_for(&self, settings: &PodSettings) -> String {
        match (&settings.image, self.fips_for(settings)) {
            (Some(image), _) => image.clone(),
            (None, true) => self.proxy_image_fips.clone(),
            (None, false) => self.proxy_image.clone(),
        }
    }

    /// `ghcr.io/gembok/gembok-proxy:<this injector's version>`.
    pub fn default_proxy_image() -> String {
        format!("ghcr.io/gembok/gembok-proxy:{}", env!("CARGO_PKG_VERSION"))
    }

    /// The FIPS build's image: [`InjectorConfig::default_proxy_image`] tagged `-fips`, as the
    /// Dockerfile's `gembok-proxy-fips` target is.
    pub fn default_proxy_image_fips() -> String {
        format!("{}-fips", Self::default_proxy_image())
    }
}

impl Default for InjectorConfig {
    fn default() -> Self {
        Self {
            proxy_image: Self::default_proxy_image(),
            proxy_image_fips: Self::default_proxy_image_fips(),
            fips: false,
            proxy_pull_policy: PullPolicy::default(),
            sidecar_mode: SidecarMode::Native,
            unannotated: Unannotated::default(),
            proxy_uid: Some(crate::sidecar::PROXY_UID),
        }
    }
}

/// What the edge knows about the pod's surroundings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The namespace is Istio-injected (`istio-injection=enabled` or `istio.io/rev`). The
    /// webhook learns it from the path the API server calls; `inject` from Namespace objects.
    pub namespace_istio: bool,
}

/// The verdict on one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Inject {
        pod: Box<Pod>,
        plan: Box<Plan>,
    },
    Skip(SkipReason),
    /// Refused by injector-wide policy (`--unannotated-pods deny`); the message says what to add.
    Deny(String),
    /// Annotation values the injector refuses (see the policy in `annotations`).
    Reject(Vec<AnnotationError>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub decision: Decision,
    /// Human-readable, one line each; returned as AdmissionResponse warnings.
    pub warnings: Vec<String>,
}

/// What `gembok.io/status` records. A struct, not a JSON map, so the field order is fixed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    mode: &'a str,
    image: &'a str,
    container: &'a str,
    volume: &'a str,
    cert_secret: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_sans_config_map: Option<&'a str>,
    inbound: Vec<u16>,
    outbound: Vec<u16>,
}

/// Decides and, when it should, injects the proxy into `pod`.
pub fn inject(pod: &Pod, config: &InjectorConfig, context: &Context) -> Outcome {
    let mut warnings = Vec::new();
    if let Some(reason) = policy::precheck(pod) {
        // A pod that asks for encryption (gembok.io/inbound or outbound) but cannot get the
        // sidecar is refused, not run in plaintext; the opt-out label stays the way to run it
        // without.
        let asked = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(INBOUND) || a.contains_key(OUTBOUND));
        let decision = match reason {
            SkipReason::HostNetwork | SkipReason::NameTaken(_) if asked => {
                Decision::Reject(vec![AnnotationError::Pod {
                    reason: format!(
                        "the pod asks for encryption ({INBOUND}/{OUTBOUND}) but cannot get the \
                         sidecar: {reason}; fix that, or opt the pod out with the label \
                         {INJECT_LABEL}=\"false\" (its traffic is then not encrypted)"
                    ),
                }])
            }
            reason => Decision::Skip(reason),
        };
        if decision == Decision::Skip(SkipReason::AlreadyInjected) {
            warnings.extend(uncovered_by_istio_exclusions(pod, context));
        }
        return Outcome { decision, warnings };
    }
    warnings.extend(policy::stale_status(pod));
    let empty = BTreeMap::new();
    let pod_annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let parsed = annotations::parse(pod_annotations);
    warnings.extend(parsed.warnings);
    let mut errors = parsed.errors;
    let settings = parsed.settings;
    let fips = config.fips_for(&settings);
    if fips {
        let by = match settings.fips {
            Some(_) => format!("{} is \"true\"", annotations::FIPS),
            None => "the injector gives every pod the FIPS build (--fips)".to_owned(),
        };
        errors.extend(annotations::fips_refusals(&settings, pod_annotations, &by));
    }

    if errors.is_empty() && settings.inbound.is_empty() && settings.outbound.is_empty() {
        return Outcome {
            decision: nothing_to_encrypt(config),
            warnings,
        };
    }
    let Some(spec) = pod.spec.as_ref() else {
        let decision = if errors.is_empty() {
            Decision::Skip(SkipReason::NoSpec)
        } else {
            Decision::Reject(errors)
        };
        return Outcome { decision, warnings };
    };
    errors.extend(check_ports(&settings, spec, pod_annotations));
    errors.extend(check_linux(spec));
    for (list, set) in [
        (
            &sidecar::ALLOWED_SANS_LIST,
            &settings.allowed_sans_configmap,
        ),
        (&sidecar::CRL_LIST, &settings.crl_configmap),
    ] {
        if set.is_some() && spec.volumes.iter().flatten().any(|v| v.name == list.volume) {
            errors.push(AnnotationError::Pod {
                reason: format!(
                    "{} needs a volume named {}, and the pod has one already",
                    list.annotation, list.volume
                ),
            });
        }
    }
    let cert_secret = match resolve_cert_secret(&settings, spec) {
        Ok(name) => name,
        Err(e) => {
            errors.push(e);
            String::new()
        }
    };
    if !errors.is_empty() {
        return Outcome {
            decision: Decision::Reject(errors),
            warnings,
        };
    }

    let istio = istio::detect(pod, context.namespace_istio);
    let mode = settings.sidecar_mode.unwrap_or(config.sidecar_mode);
    let plan = Plan {
        mode,
        image: config.image_for(&settings),
        pull_policy: config.proxy_pull_policy,
        inbound: merge_allowed_sans(&settings, &mut warnings),
        outbound: settings.outbound.clone(),
        cert_secret,
        allowed_sans_configmap: settings.allowed_sans_configmap.clone(),
        crl_configmap: settings.crl_configmap.clone(),
        log_level: settings.log_level.clone(),
        resources: resolve_resources(&settings, &mut warnings),
        drain_seconds: settings
            .drain_seconds
            .or_else(|| drain_within_grace(spec.termination_grace_period_seconds)),
        key_exchange: settings.key_exchange.clone(),
        cipher_suites: settings.cipher_suites.clone(),
        fips,
        istio: istio.is_some(),
        run_as: config.proxy_uid,
        exit_with_app: ends_with_app(mode, spec) == Some(Ok(())),
    };
    warnings.extend(risk_warnings(&plan, spec));
    for (key, set) in [
        (ALLOWED_SANS, !settings.allowed_sans.is_empty()),
        (
            ALLOWED_SANS_CONFIGMAP,
            settings.allowed_sans_configmap.is_some(),
        ),
    ] {
        if settings.inbound.is_empty() && set {
            warnings.push(format!(
                "annotation {key} has no effect: it restricts who may connect in, and the pod \
                 has no {INBOUND} mapping (whom it calls is checked by server-name in {OUTBOUND})"
            ));
        }
    }

    let mut injected = pod.clone();
    add_sidecar(&mut injected, &plan);
    let annotations = injected
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(STATUS.to_owned(), status_json(&plan));
    // Classic mode puts the proxy first in `containers`, where `kubectl logs`/`exec` would land
    // by default: point them at the app's first container unless the pod already chose one.
    if plan.mode == SidecarMode::Classic
        && let Some(app) = spec.containers.first()
    {
        annotations
            .entry(DEFAULT_CONTAINER.to_owned())
            .or_insert_with(|| app.name.clone());
    }
    if let Some(why) = istio {
        warnings.push(exclude_from_istio(annotations, &plan, &why));
        if istio::init_rendered(pod) {
            warnings.push(format!(
                "Istio injected this pod first: its {} container was rendered without these \
                 exclusions; let gembok-injector's webhook run first, or use Istio CNI",
                istio::INIT_CONTAINER
            ));
        }
    }
    Outcome {
        decision: Decision::Inject {
            pod: Box::new(injected),
            plan: Box::new(plan),
        },
        warnings,
    }
}

/// Without `gembok.io/drain-seconds`, a pod whose `terminationGracePeriodSeconds` is shorter
/// than the proxy's 30 s drain gets a drain that fits in it: the kubelet would otherwise kill
/// the proxy mid-drain, and a killed proxy's connections end with FINs that pass for clean
/// ends, where its own end of drain resets them.
fn drain_within_grace(grace: Option<i64>) -> Option<u32> {
    let grace = u32::try_from(grace?.max(0)).ok()?;
    (grace < sidecar::PROXY_DRAIN_GRACE_SECONDS).then_some(grace)
}

/// Skip or deny a pod without `gembok.io/inbound` and `gembok.io/outbound`, per the policy.
fn nothing_to_encrypt(config: &InjectorConfig) -> Decision {
    match config.unannotated {
        Unannotated::Skip => Decision::Skip(SkipReason::NothingToEncrypt),
        Unannotated::Deny => Decision::Deny(policy::unannotated_denied()),
    }
}

/// Native: first init container, so later init containers can already use the mesh. Classic:
/// first container, so the kubelet starts it (and runs its postStart hook) before the app.
/// Nothing else is moved or removed.
fn add_sidecar(pod: &mut Pod, plan: &Plan) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let container = sidecar::container(plan);
    match plan.mode {
        SidecarMode::Native => spec
            .init_containers
            .get_or_insert_with(Vec::new)
            .insert(0, container),
        SidecarMode::Classic => spec.containers.insert(0, container),
    }
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(sidecar::volumes(plan));
    if plan.exit_with_app {
        spec.share_process_namespace = Some(true);
    }
}

/// For a classic sidecar in a run-to-completion pod (`None` otherwise): whether it can end with
/// its app ([`Plan::exit_with_app`]), or why not, for the admission warning. It can in a pod that
/// runs once, does not use the node's PID namespace (the API refuses both) and has not turned
/// process-namespace sharing off on purpose.
fn ends_with_app(mode: SidecarMode, spec: &PodSpec) -> Option<Result<(), &'static str>> {
    let policy = spec.restart_policy.as_deref();
    if mode != SidecarMode::Classic || !matches!(policy, Some("Never" | "OnFailure")) {
        return None;
    }
    Some(if policy == Some("OnFailure") {
        Err(
            "the kubelet restarts a failed app, which would find the proxy gone had it ended \
             with the app's first run",
        )
    } else if spec.host_pid == Some(true) {
        Err(
            "the pod uses the node's PID namespace (hostPID), so the proxy cannot watch the \
             app's processes",
        )
    } else if spec.share_process_namespace == Some(false) {
        Err("the pod turns process-namespace sharing off (shareProcessNamespace: false)")
    } else {
        Ok(())
    })
}

fn status_json(plan: &Plan) -> String {
    let status = Status {
        mode: plan.mode.as_str(),
        image: &plan.image,
        container: CONTAINER_NAME,
        volume: VOLUME_NAME,
        cert_secret: &plan.cert_secret,
        allowed_sans_config_map: plan.allowed_sans_configmap.as_deref(),
        inbound: plan.inbound.iter().map(|m| m.tls_port).collect(),
        outbound: plan.outbound.iter().map(|r| r.local_port).collect(),
    };
    serde_json::to_string(&status).unwrap_or_default()
}

fn exclude_from_istio(
    annotations: &mut BTreeMap<String, String>,
    plan: &Plan,
    why: &str,
) -> String {
    let [added_in, added_out] = add_istio_exclusions(
        annotations,
        plan.inbound.iter().map(|m| m.tls_port),
        plan.outbound.iter().map(|r| r.port),
    );
    let list = |ports: &[u16]| {
        if ports.is_empty() {
            "no port".to_owned()
        } else {
            port_list(ports)
        }
    };
    format!(
        "Istio also injects this pod ({why}): added {} to {} and {} to {} so Istio does not \
         capture Gembok's TLS",
        list(&added_in),
        istio::EXCLUDE_INBOUND,
        list(&added_out),
        istio::EXCLUDE_OUTBOUND,
    )
}

/// Adds Gembok's ports to Istio's exclusions: inbound its TLS ports and the admin port (kubelet
/// probes, Prometheus), outbound the peers' ports. Returns the ports added to each.
fn add_istio_exclusions(
    annotations: &mut BTreeMap<String, String>,
    tls_ports: impl Iterator<Item = u16>,
    peer_ports: impl Iterator<Item = u16>,
) -> [Vec<u16>; 2] {
    let inbound: Vec<u16> = tls_ports.chain([ADMIN_PORT]).collect();
    let outbound = unique(peer_ports);
    [
        istio::exclude_ports(annotations, istio::EXCLUDE_INBOUND, &inbound),
        istio::exclude_ports(annotations, istio::EXCLUDE_OUTBOUND, &outbound),
    ]
}

fn port_list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A pod injected already (`gembok.io/status`), by `gembok-injector inject` without Istio in view
/// say, that Istio also injects but whose exclusions lack Gembok's ports: it is not injected
/// again, so say what Istio will capture.
fn uncovered_by_istio_exclusions(pod: &Pod, context: &Context) -> Option<String> {
    let why = istio::detect(pod, context.namespace_istio)?;
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let settings = annotations::parse(&annotations).settings;
    let missing = add_istio_exclusions(
        &mut annotations,
        settings.inbound.iter().map(|m| m.tls_port),
        settings.outbound.iter().map(|r| r.port),
    );
    let lacks = [istio::EXCLUDE_INBOUND, istio::EXCLUDE_OUTBOUND]
        .into_iter()
        .zip(&missing)
        .filter(|(_, ports)| !ports.is_empty())
        .map(|(key, ports)| format!("{key} lacks {}", port_list(ports)))
        .collect::<Vec<_>>();
    if lacks.is_empty() {
        return None;
    }
    Some(format!(
        "Istio also injects this pod ({why}), but Gembok's sidecar was injected already ({STATUS} \
         is set) without Istio in view: {}, so Istio will capture Gembok's TLS; inject it with \
         Istio in view (gembok-injector inject --istio, or a Namespace object labelled for Istio \
         in the input) or let the webhook inject it",
        lacks.join(" and ")
    ))
}

fn unique(ports: impl Iterator<Item = u16>) -> Vec<u16> {
    let mut seen = BTreeSet::new();
    ports.filter(|p| seen.insert(*p)).collect()
}

/// The Secret name: the annotation, or `<serviceAccountName>-gembok-tls`.
fn resolve_cert_secret(settings: &PodSettings, spec: &PodSpec) -> Result<String, AnnotationError> {
    if let Some(name) = &settings.cert_secret {
        return Ok(name.clone());
    }
    #[allow(deprecated)] // `serviceAccount` is the deprecated alias some old manifests still use.
    let account = spec
        .service_account_name
        .as_deref()
        .or(spec.service_account.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let name = format!("{account}-gembok-tls");
    annotations::check_object_name(&name)
        .map(|()| name.clone())
        .map_err(|reason| AnnotationError::Unset {
            key: CERT_SECRET.to_owned(),
            reason: format!(
                "the default Secret name {name:?}, derived from the ServiceAccount {account:?}, \
                 is not a valid Secret name ({reason}); set {CERT_SECRET}"
            ),
        })
}

/// The pod-wide lists, `gembok.io/allowed-sans` and the `gembok.io/allowed-sans-configmap`
/// file (together: a peer either admits is admitted), apply to the inbound mappings without an
/// `allow-san` list of their own. A mapping's own list is the narrower rule and wins: adding a
/// pod-wide list to it would let in peers that the port was meant to refuse (a warning says so).
fn merge_allowed_sans(
    settings: &PodSettings,
    warnings: &mut Vec<String>,
) -> Vec<annotations::InboundMapping> {
    let pod_wide: Vec<&str> = [
        (!settings.allowed_sans.is_empty()).then_some(ALLOWED_SANS),
        settings
            .allowed_sans_configmap
            .as_ref()
            .map(|_| ALLOWED_SANS_CONFIGMAP),
    ]
    .into_iter()
    .flatten()
    .collect();
    settings
        .inbound
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.allow_sans.is_empty() {
                m.allow_sans = settings.allowed_sans.clone();
                m.allow_san_file = settings
                    .allowed_sans_configmap
                    .as_ref()
                    .map(|_| sidecar::allowed_sans_file());
            } else if !pod_wide.is_empty() {
                warnings.push(format!(
                    "port {} has its own allow-san list, which {} {} not widen: \
                     only {} may connect there",
                    m.tls_port,
                    pod_wide.join(" and "),
                    if pod_wide.len() > 1 { "do" } else { "does" },
                    m.allow_sans.join(", ")
                ));
            }
            m
        })
        .collect()
}

/// Ports the proxy will listen on must not clash with each other, the admin port, the app's
/// ports or any declared container port: two listeners on one port in one network namespace
/// means the pod never becomes ready, with an error far from the annotation. The app must not
/// sit on the admin port either: mesh peers would reach the admin endpoint, which trusts
/// loopback.
fn check_ports(
    settings: &PodSettings,
    spec: &PodSpec,
    annotations: &BTreeMap<String, String>,
) -> Vec<AnnotationError> {
    let declared = declared_tcp_ports(spec);
    let mut errors = check_listeners(settings, &declared, annotations);
    errors.extend(check_app_ports(settings, annotations));
    errors.extend(check_admin_port(&declared));
    errors
}

/// Every TCP `containerPort` of the pod's containers and init containers, with the container.
fn declared_tcp_ports(spec: &PodSpec) -> Vec<(i32, &str)> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| {
            c.ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .map(move |p| (p.container_port, c.name.as_str()))
        })
        .collect()
}

/// TLS and local ports: not the admin port, not twice, not an APPPORT, not a declared port.
fn check_listeners(
    settings: &PodSettings,
    declared: &[(i32, &str)],
    annotations: &BTreeMap<String, String>,
) -> Vec<AnnotationError> {
    let app_ports: BTreeSet<u16> = settings.inbound.iter().map(|m| m.app_port).collect();
    let listeners = settings
        .inbound
        .iter()
        .map(|m| (INBOUND, "TLSPORT", m.tls_port))
        .chain(
            settings
                .outbound
                .iter()
                .map(|r| (OUTBOUND, "LOCALPORT", r.local_port)),
        );
    let mut taken = BTreeSet::new();
    let mut errors = Vec::new();
    for (key, what, port) in listeners {
        let reason = if port == ADMIN_PORT {
            Some(format!("{what} {port} is the proxy's admin port"))
        } else if !taken.insert(port) {
            Some(format!("{what} {port} is used twice by the proxy"))
        } else if app_ports.contains(&port) {
            Some(format!(
                "{what} {port} is also an APPPORT, where the app listens"
            ))
        } else {
            declared
                .iter()
                .find(|(p, _)| *p == i32::from(port))
                .map(|(_, name)| format!("{what} {port} is already a port of container {name:?}"))
        };
        if let Some(reason) = reason {
            errors.push(value_error(key, annotations, reason));
        }
    }
    errors
}

/// An error about the annotation `key` as the pod has it.
fn value_error(
    key: &str,
    annotations: &BTreeMap<String, String>,
    reason: String,
) -> AnnotationError {
    annotations::error(key, annotations.get(key).map_or("", String::as_str), reason)
}

/// An APPPORT equal to the admin port would forward mesh traffic to the admin endpoint, which
/// trusts loopback: any peer could POST /shutdown or read /metrics.
fn check_app_ports(
    settings: &PodSettings,
    annotations: &BTreeMap<String, String>,
) -> Vec<AnnotationError> {
    settings
        .inbound
        .iter()
        .filter(|m| m.app_port == ADMIN_PORT)
        .map(|m| {
            value_error(
                INBOUND,
                annotations,
                format!(
                    "APPPORT {} (of TLSPORT {}) is the proxy's admin port: mesh peers would reach \
                     its admin endpoint, which trusts loopback",
                    m.app_port, m.tls_port
                ),
            )
        })
        .collect()
}

/// A container that already declares the admin port would clash with the sidecar's admin
/// listener, which cannot move (probes, metrics and the classic postStart hook use it).
fn check_admin_port(declared: &[(i32, &str)]) -> Option<AnnotationError> {
    declared
        .iter()
        .find(|(p, _)| *p == i32::from(ADMIN_PORT))
        .map(|(_, name)| AnnotationError::Pod {
            reason: format!(
                "port {ADMIN_PORT}, the proxy's admin port, is already a port of container \
                 {name:?}; move that container to another port, or opt the pod out with the \
                 label {INJECT_LABEL}=\"false\""
            ),
        })
}

/// gembok-proxy is a Linux binary: a Windows pod would never start its sidecar, with an error
/// from the node that never names Gembok.
fn check_linux(spec: &PodSpec) -> Option<AnnotationError> {
    let by_os = spec.os.as_ref().map(|os| os.name.as_str());
    let by_node = spec
        .node_selector
        .as_ref()
        .and_then(|s| s.get("kubernetes.io/os"))
        .map(String::as_str);
    let windows = [by_os, by_node, by_affinity(spec)]
        .into_iter()
        .flatten()
        .find(|os| *os == "windows")?;
    Some(AnnotationError::Pod {
        reason: format!(
            "the pod runs on {windows} nodes, and gembok-proxy runs on Linux only; opt the pod \
             out with the label {INJECT_LABEL}=\"false\" (its traffic is then not encrypted)"
        ),
    })
}

/// `windows` when the pod's required node affinity admits Windows nodes only: every term (the
/// terms are alternatives) requires `kubernetes.io/os In [windows]`.
fn by_affinity(spec: &PodSpec) -> Option<&'static str> {
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    let windows_only = |term: &k8s_openapi::api::core::v1::NodeSelectorTerm| {
        term.match_expressions.iter().flatten().any(|e| {
            e.key == "kubernetes.io/os"
                && e.operator == "In"
                && e.values
                    .as_ref()
                    .is_some_and(|v| !v.is_empty() && v.iter().all(|os| os == "windows"))
        })
    };
    (!terms.is_empty() && terms.iter().all(windows_only)).then_some("windows")
}

/// Defaults for whatever the annotations leave out, keeping request <= limit: a default gives
/// way to an annotation; two annotations that disagree lower the request, with a warning.
fn resolve_resources(settings: &PodSettings, warnings: &mut Vec<String>) -> Resources {
    let r = &settings.resources;
    let (cpu_request, cpu_limit) = pair(
        (
            CPU_REQUEST,
            r.cpu_request.as_deref(),
            sidecar::DEFAULT_CPU_REQUEST,
        ),
        (
            CPU_LIMIT,
            r.cpu_limit.as_deref(),
            sidecar::DEFAULT_CPU_LIMIT,
        ),
        warnings,
    );
    let (memory_request, memory_limit) = pair(
        (
            MEMORY_REQUEST,
            r.memory_request.as_deref(),
            sidecar::DEFAULT_MEMORY_REQUEST,
        ),
        (
            MEMORY_LIMIT,
            r.memory_limit.as_deref(),
            sidecar::DEFAULT_MEMORY_LIMIT,
        ),
        warnings,
    );
    Resources {
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
    }
}

/// Whether the pod has Guaranteed QoS: every container and init container has cpu and memory
/// limits, and requests equal to them (absent requests default to the limits).
fn guaranteed(spec: &PodSpec) -> bool {
    let amount =
        |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| quantity::parse(&q.0).ok();
    let mut containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    !spec.containers.is_empty()
        && containers.all(|c| {
            let Some(resources) = &c.resources else {
                return false;
            };
            ["cpu", "memory"].iter().all(|kind| {
                let limit = resources.limits.as_ref().and_then(|l| l.get(*kind));
                let request = resources.requests.as_ref().and_then(|r| r.get(*kind));
                match (limit.and_then(amount), request) {
                    (Some(_), None) => true,
                    (Some(limit), Some(request)) => amount(request) == Some(limit),
                    (None, _) => false,
                }
            })
        })
}

fn pair(
    (request_key, request, request_default): (&str, Option<&str>, &str),
    (limit_key, limit, limit_default): (&str, Option<&str>, &str),
    warnings: &mut Vec<String>,
) -> (String, String) {
    let value = |q: &str| quantity::parse(q).unwrap_or(0.0);
    let req = request.unwrap_or(request_default);
    let lim = limit.unwrap_or(limit_default);
    if value(req) <= value(lim) {
        return (req.to_owned(), lim.to_owned());
    }
    match (request, limit) {
        (Some(_), None) => (req.to_owned(), req.to_owned()),
        (None, Some(_)) => (lim.to_owned(), lim.to_owned()),
        _ => {
            warnings.push(format!(
                "annotation {request_key}={req:?} is above {limit_key}={lim:?}; the request is \
                 lowered to the limit"
            ));
            (lim.to_owned(), lim.to_owned())
        }
    }
}

fn risk_warnings(plan: &Plan, spec: &PodSpec) -> Vec<String> {
    let mut warnings = Vec::new();
    let r = &plan.resources;
    let same = |a: &str, b: &str| quantity::parse(a).ok() == quantity::parse(b).ok();
    if guaranteed(spec)
        && !(same(&r.cpu_request, &r.cpu_limit) && same(&r.memory_request, &r.memory_limit))
    {
        warnings.push(format!(
            "every container of this pod has requests equal to its limits (Guaranteed QoS), but \
             the proxy's do not (cpu {} of {}, memory {} of {}): the pod becomes Burstable (no \
             exclusive CPUs, earlier OOM kills); to keep it Guaranteed set {CPU_REQUEST} equal to \
             {CPU_LIMIT} and {MEMORY_REQUEST} equal to {MEMORY_LIMIT}",
            r.cpu_request, r.cpu_limit, r.memory_request, r.memory_limit
        ));
    }
    let pod_uid = spec.security_context.as_ref().and_then(|c| c.run_as_user);
    if plan.run_as.is_none() && pod_uid == Some(0) {
        warnings.push(
            "the pod runs as root (securityContext.runAsUser 0) and the injector leaves the \
             proxy's user to the pod (--proxy-uid none): the kubelet will refuse to start the \
             proxy, which must run as non-root; give the pod a non-root runAsUser or the \
             injector a --proxy-uid"
                .to_owned(),
        );
    }
    match ends_with_app(plan.mode, spec) {
        Some(Ok(())) => warnings.push(
            "classic sidecar in a run-to-completion pod (restartPolicy Never): the injector sets \
             shareProcessNamespace: true so that the proxy exits when the app's processes have, \
             and the pod completes; the pod's containers now see each other's processes and the \
             app is no longer PID 1 (set shareProcessNamespace: false to opt out, and end the \
             proxy with POST /shutdown instead); prefer gembok.io/sidecar-mode=native \
             (Kubernetes 1.29+)"
                .to_owned(),
        ),
        Some(Err(why)) => warnings.push(format!(
            "classic sidecar in a run-to-completion pod (restartPolicy {}): {why}; the pod \
             completes only if the app calls POST http://127.0.0.1:{ADMIN_PORT}/shutdown when \
             done; prefer gembok.io/sidecar-mode=native (Kubernetes 1.29+)",
            spec.restart_policy.as_deref().unwrap_or_default()
        )),
        None => {}
    }
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    if let Some(drain) = plan.drain_seconds
        && i64::from(drain) > grace
    {
        warnings.push(format!(
            "annotation {DRAIN_SECONDS}={drain} is longer than terminationGracePeriodSeconds \
             ({grace}); the kubelet kills the proxy before it finishes draining"
        ));
    }
    let ports = plan
        .inbound
        .iter()
        .map(|m| ("TLSPORT", m.tls_port))
        .chain(plan.outbound.iter().map(|r| ("LOCALPORT", r.local_port)));
    for (what, port) in ports {
        if port < 1024 {
            warnings.push(format!(
                "{what} {port} is below 1024: the proxy runs without NET_BIND_SERVICE, so this \
                 only works where the runtime sets net.ipv4.ip_unprivileged_port_start=0"
            ));
        }
        if istio::RESERVED.contains(&port) {
            warnings.push(format!(
                "{what} {port} is in Istio's reserved range 15000-15090; pick another port if \
                 Istio may run in this pod"
            ));
        }
    }
    // The app's port may be a native sidecar's (an init container with restartPolicy Always).
    let serving = || {
        spec.containers.iter().chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always")),
        )
    };
    for m in &plan.inbound {
        let udp_only = serving()
            .flat_map(|c| c.ports.iter().flatten())
            .fold(None, |acc, p| {
                if p.container_port != i32::from(m.app_port) {
                    return acc;
                }
                let udp = p.protocol.as_deref() == Some("UDP");
                Some(acc.unwrap_or(true) && udp)
            });
        if udp_only == Some(true) {
            warnings.push(format!(
                "APPPORT {} is declared as UDP only; the proxy forwards TCP",
                m.app_port
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::annotations::{
        CIPHER_SUITES, CRL_CONFIGMAP, FIPS, IMAGE, KEY_EXCHANGE, KEY_EXCHANGE_GROUPS,
        NOT_FIPS_APPROVED, TLS13_CIPHER_SUITES,
    };

    /// A pod with one container `app` (declaring `ports`), `annotations` and `spec` extras.
    fn pod(annotations: &[(&str, &str)], ports: &[i32], spec: serde_json::Value) -> Pod {
        let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let ports: Vec<_> = ports.iter().map(|p| json!({"containerPort": p})).collect();
        let mut value = json!({
            "metadata": {"name": "a", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app:1", "ports": ports}]},
        });
        if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), spec.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(value).expect("a Pod")
    }

    fn decide(pod: &Pod) -> Decision {
        inject(pod, &InjectorConfig::default(), &Context::default()).decision
    }

    fn rejections(pod: &Pod) -> Vec<String> {
        match decide(pod) {
            Decision::Reject(errors) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("not rejected: {other:?}"),
        }
    }

    /// The allow-list volume's name is the injector's: a pod that has one already is refused
    /// when it asks for the ConfigMap list (never merged into, never renamed), and is fine
    /// when it does not.
    #[test]
    fn the_list_volume_names_must_be_free_when_they_are_needed() {
        for (annotation, volume) in [
            (ALLOWED_SANS_CONFIGMAP, "gembok-allowed-sans"),
            (CRL_CONFIGMAP, "gembok-crl"),
        ] {
            let volumes = json!({"volumes": [{"name": volume, "emptyDir": {}}]});
            let asks = [(INBOUND, "8443=8080"), (annotation, "lists")];
            let errors = rejections(&pod(&asks, &[8080], volumes.clone()));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains(&format!("{annotation} needs a volume named {volume}")),
                "{errors:?}"
            );
            assert!(matches!(
                decide(&pod(&asks[..1], &[8080], volumes)),
                Decision::Inject { .. }
            ));
        }
    }

    /// A pod on the FIPS build (by its annotation or the injector's `--fips`) is refused when
    /// its annotations name suites or groups FIPS does not approve, each named on the annotation
    /// that asked for it with the reason it is on that build; `gembok.io/fips: "false"` opts a
    /// pod out of `--fips`.
    #[test]
    fn fips_refuses_the_suites_and_groups_fips_does_not_approve() {
        let asks = [
            (INBOUND, "8443=8080"),
            (KEY_EXCHANGE, "MLKEM1024,x25519,secp384r1"),
            (
                CIPHER_SUITES,
                "TLS_AES_256_GCM_SHA384,TLS_CHACHA20_POLY1305_SHA256",
            ),
        ];
        let by_annotation = [&asks[..], &[(FIPS, "true")]].concat();
        assert_eq!(
            rejections(&pod(&by_annotation, &[8080], json!({}))),
            [
                "annotation gembok.io/key-exchange=\"MLKEM1024,x25519,secp384r1\": X25519 is not \
                 FIPS-approved, and gembok.io/fips is \"true\" (the proxy's FIPS build refuses \
                 to start with it)",
                "annotation gembok.io/cipher-suites=\"TLS_AES_256_GCM_SHA384,\
                 TLS_CHACHA20_POLY1305_SHA256\": TLS13_CHACHA20_POLY1305_SHA256 is not \
                 FIPS-approved, and gembok.io/fips is \"true\" (the proxy's FIPS build refuses \
                 to start with it)",
            ]
        );
        let everywhere = InjectorConfig {
            fips: true,
            ..InjectorConfig::default()
        };
        let decide_with = |annotations: &[(&str, &str)], config: &InjectorConfig| {
            inject(
                &pod(annotations, &[8080], json!({})),
                config,
                &Context::default(),
            )
            .decision
        };
        match decide_with(&asks, &everywhere) {
            Decision::Reject(errors) => {
                assert_eq!(errors.len(), 2, "{errors:?}");
                assert!(
                    errors[0].to_string().contains(
                        "X25519 is not FIPS-approved, and the injector gives every pod the FIPS \
                         build (--fips)"
                    ),
                    "{errors:?}"
                );
            }
            other => panic!("not rejected: {other:?}"),
        }
        let opted_out = [&asks[..], &[(FIPS, "false")]].concat();
        assert!(matches!(
            decide_with(&opted_out, &everywhere),
            Decision::Inject { .. }
        ));
        // Without either, every name the proxy knows is taken.
        assert!(matches!(
            decide(&pod(&asks, &[8080], json!({}))),
            Decision::Inject { .. }
        ));

        let approved: Vec<&str> = KEY_EXCHANGE_GROUPS
            .iter()
            .chain(TLS13_CIPHER_SUITES)
            .filter(|n| !NOT_FIPS_APPROVED.contains(n))
            .copied()
            .collect();
        assert_eq!(approved.len(), 8, "6 groups and 2 suites: {approved:?}");
        let (groups, suites) = (approved[..6].join(","), approved[6..].join(","));
        let all = [
            (INBOUND, "8443=8080"),
            (KEY_EXCHANGE, groups.as_str()),
            (CIPHER_SUITES, suites.as_str()),
        ];
        assert!(matches!(
            decide_with(&all, &everywhere),
            Decision::Inject { .. }
        ));
    }

    /// `gembok.io/fips: "true"` gets the FIPS build's image, unless `gembok.io/image` names one.
    #[test]
    fn a_fips_pod_gets_the_fips_image_unless_it_names_its_own() {
        let image =
            |annotations: &[(&str, &str)]| match decide(&pod(annotations, &[8080], json!({}))) {
                Decision::Inject { plan, .. } => plan.image.clone(),
                other => panic!("not injected: {other:?}"),
            };
        let inbound = (INBOUND, "8443=8080");
        let defaults = InjectorConfig::default();
        assert_eq!(image(&[inbound]), defaults.proxy_image);
        assert_eq!(image(&[inbound, (FIPS, "false")]), defaults.proxy_image);
        assert_eq!(image(&[inbound, (FIPS, "true")]), defaults.proxy_image_fips);
        assert_eq!(
            defaults.proxy_image_fips,
            format!("{}-fips", defaults.proxy_image)
        );
        let own = (IMAGE, "registry.example/gembok-proxy:0.1.0-fips-rhel");
        assert_eq!(image(&[inbound, (FIPS, "true"), own]), own.1);
        // --fips: the FIPS image unless the pod opts out.
        let everywhere = InjectorConfig {
            fips: true,
            ..InjectorConfig::default()
        };
        let image_with = |annotations: &[(&str, &str)]| match inject(
            &pod(annotations, &[8080], json!({})),
            &everywhere,
            &Context::default(),
        )
        .decision
        {
            Decision::Inject { plan, .. } => plan.image.clone(),
            other => panic!("not injected: {other:?}"),
        };
        assert_eq!(image_with(&[inbound]), defaults.proxy_image_fips);
        assert_eq!(
            image_with(&[inbound, (FIPS, "false")]),
            defaults.proxy_image
        );
    }

    /// An APPPORT on the admin port would hand mesh peers the admin endpoint (it trusts
    /// loopback); a LOCALPORT there would clash with it.
    #[test]
    fn refuses_the_admin_port_as_app_or_local_port() {
        let errors = rejections(&pod(&[(INBOUND, "8443=15700")], &[], json!({})));
        assert_eq!(
            errors,
            [
                "annotation gembok.io/inbound=\"8443=15700\": APPPORT 15700 (of TLSPORT 8443) is \
                 the proxy's admin port: mesh peers would reach its admin endpoint, which trusts \
                 loopback"
            ]
        );
        let errors = rejections(&pod(&[(OUTBOUND, "15700=svc:8443")], &[], json!({})));
        assert_eq!(
            errors,
            [
                "annotation gembok.io/outbound=\"15700=svc:8443\": LOCALPORT 15700 is the proxy's \
              admin port"
            ]
        );
    }

    #[test]
    fn refuses_windows_pods_which_could_never_start_the_sidecar() {
        for spec in [
            json!({"os": {"name": "windows"}}),
            json!({"nodeSelector": {"kubernetes.io/os": "windows"}}),
        ] {
            let errors = rejections(&pod(&[(INBOUND, "8443=8080")], &[8080], spec));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("gembok-proxy runs on Linux only"),
                "{errors:?}"
            );
        }
        let linux = json!({"os": {"name": "linux"}, "nodeSelector": {"kubernetes.io/os": "linux"}});
        let decision = decide(&pod(&[(INBOUND, "8443=8080")], &[8080], linux));
        assert!(matches!(decision, Decision::Inject { .. }), "{decision:?}");
    }

    #[test]
    fn allowed_sans_without_an_inbound_mapping_is_pointed_out() {
        let config = InjectorConfig::default();
        let outbound_only = pod(
            &[
                (OUTBOUND, "15701=svc:8443"),
                (ALLOWED_SANS, "spiffe://td/ns/a/sa/b"),
            ],
            &[],
            json!({}),
        );
        let outcome = inject(&outbound_only, &config, &Context::default());
        assert!(matches!(outcome.decision, Decision::Inject { .. }));
        assert!(
            outcome
                .warnings
                .iter()
                .any(|w| w.contains("gembok.io/allowed-sans has no effect")),
            "{:?}",
            outcome.warnings
        );
        let both = pod(
            &[
                (INBOUND, "8443=8080"),
                (ALLOWED_SANS, "spiffe://td/ns/a/sa/b"),
            ],
            &[8080],
            json!({}),
        );
        let outcome = inject(&both, &config, &Context::default());
        assert!(!outcome.warnings.iter().any(|w| w.contains("has no effect")));
    }

    #[test]
    fn refuses_a_container_that_declares_the_admin_port() {
        let errors = rejections(&pod(&[(INBOUND, "8443=8080")], &[8080, 15700], json!({})));
        assert_eq!(
            errors,
            [
                "port 15700, the proxy's admin port, is already a port of container \"app\"; move \
              that container to another port, or opt the pod out with the label \
              gembok.io/inject=\"false\""
            ]
        );
        let udp = json!({"containers": [{"name": "app", "image": "app:1",
            "ports": [{"containerPort": 15700, "protocol": "UDP"}]}]});
        let decision = decide(&pod(&[(INBOUND, "8443=8080")], &[], udp));
        assert!(matches!(decision, Decision::Inject { .. }), "{decision:?}");
    }

    /// An APPPORT that only a native sidecar declares, as UDP only, is warned about like an app
    /// container's; an ordinary init container (it has exited before the proxy forwards) is not
    /// where the app listens.
    #[test]
    fn a_udp_only_port_of_a_native_sidecar_is_warned_about() {
        let warnings = |restart: Option<&str>| {
            let mut init = json!({"name": "dns", "image": "dns:1",
                "ports": [{"containerPort": 5353, "protocol": "UDP"}]});
            if let Some(policy) = restart {
                init["restartPolicy"] = json!(policy);
            }
            let spec = json!({"initContainers": [init]});
            inject(
                &pod(&[(INBOUND, "8443=5353")], &[], spec),
                &InjectorConfig::default(),
                &Context::default(),
            )
            .warnings
        };
        let udp = "APPPORT 5353 is declared as UDP only; the proxy forwards TCP";
        assert!(warnings(Some("Always")).iter().any(|w| w == udp));
        assert!(!warnings(None).iter().any(|w| w == udp));
    }

    /// Object names have no 63-character limit per part: the default Secret of a ServiceAccount
    /// with a 60-character name works, and a name that does not work says where it came from.
    #[test]
    fn default_secret_name_follows_object_name_rules_and_says_where_it_came_from() {
        let account = "a".repeat(60);
        let spec = json!({"serviceAccountName": account});
        match decide(&pod(&[(INBOUND, "8443=8080")], &[], spec)) {
            Decision::Inject { plan, .. } => {
                assert_eq!(plan.cert_secret, format!("{account}-gembok-tls"));
            }
            other => panic!("not injected: {other:?}"),
        }
        let spec = json!({"serviceAccountName": "Bad_Name"});
        let errors = rejections(&pod(&[(INBOUND, "8443=8080")], &[], spec));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with(
                "annotation gembok.io/cert-secret is not set: the default Secret name \
                 \"Bad_Name-gembok-tls\", derived from the ServiceAccount \"Bad_Name\", is not a \
                 valid Secret name ("
            ),
            "{}",
            errors[0]
        );
        assert!(!errors[0].contains("cert-secret=\"\""), "{}", errors[0]);
    }

    /// An annotated pod without a spec is skipped for that reason, not for "nothing to encrypt".
    #[test]
    fn an_annotated_pod_without_spec_is_skipped_for_the_true_reason() {
        let mut pod = pod(&[(INBOUND, "8443=8080")], &[], json!({}));
        pod.spec = None;
        assert_eq!(decide(&pod), Decision::Skip(SkipReason::NoSpec));
        let deny = InjectorConfig {
            unannotated: Unannotated::Deny,
            ..InjectorConfig::default()
        };
        let decision = inject(&pod, &deny, &Context::default()).decision;
        assert_eq!(decision, Decision::Skip(SkipReason::NoSpec));
        pod.metadata.annotations = None;
        assert_eq!(decide(&pod), Decision::Skip(SkipReason::NothingToEncrypt));
    }
    /// A pod injected without Istio in view (the CLI without `--istio`) comes to the webhook's
    /// Istio path: not injected again, but told which of Gembok's ports Istio will capture. One
    /// injected with Istio in view, or outside Istio, is not.
    #[test]
    fn an_already_injected_pod_that_istio_would_capture_is_warned_about() {
        let asks = [(INBOUND, "8443=8080"), (OUTBOUND, "15701=svc:9443")];
        let istio = Context {
            namespace_istio: true,
        };
        let injected = |context: &Context| {
            let outcome = inject(
                &pod(&asks, &[8080], json!({})),
                &InjectorConfig::default(),
                context,
            );
            let Decision::Inject { pod, .. } = outcome.decision else {
                panic!("not injected: {:?}", outcome.decision)
            };
            *pod
        };
        let again = |pod: &Pod, context: &Context| {
            let outcome = inject(pod, &InjectorConfig::default(), context);
            assert_eq!(
                outcome.decision,
                Decision::Skip(SkipReason::AlreadyInjected)
            );
            outcome.warnings
        };
        let without = injected(&Context::default());
        let warnings = again(&without, &istio);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains(&format!(
                "{} lacks 8443,{ADMIN_PORT} and {} lacks 9443, so Istio will capture",
                istio::EXCLUDE_INBOUND,
                istio::EXCLUDE_OUTBOUND
            )),
            "{warnings:?}"
        );
        assert_eq!(again(&without, &Context::default()), Vec::<String>::new());
        assert_eq!(again(&injected(&istio), &istio), Vec::<String>::new());
    }

    /// `--proxy-uid`: the default fixes the sidecar's user and group at 65532; `none` leaves
    /// both to the pod and the platform (still non-root), and warns where the pod runs as root,
    /// which the kubelet would then refuse for the proxy.
    #[test]
    fn the_proxy_user_is_fixed_by_default_and_left_to_the_platform_with_none() {
        let security = |config: &InjectorConfig, spec: serde_json::Value| {
            let outcome = inject(
                &pod(&[(INBOUND, "8443=8080")], &[8080], spec),
                config,
                &Context::default(),
            );
            let Decision::Inject { pod, .. } = outcome.decision else {
                panic!("not injected: {:?}", outcome.decision)
            };
            let spec = pod.spec.expect("a spec");
            let proxy = crate::sidecar::proxy_container(&spec)
                .expect("the proxy")
                .clone();
            (
                proxy.security_context.expect("a securityContext"),
                outcome.warnings,
            )
        };
        let (fixed, warnings) = security(&InjectorConfig::default(), json!({}));
        assert_eq!(
            (fixed.run_as_user, fixed.run_as_group),
            (Some(65532), Some(65532))
        );
        assert!(warnings.is_empty(), "{warnings:?}");

        let none = InjectorConfig {
            proxy_uid: None,
            ..InjectorConfig::default()
        };
        let (left, warnings) = security(&none, json!({"securityContext": {"runAsUser": 1000}}));
        assert_eq!((left.run_as_user, left.run_as_group), (None, None));
        assert_eq!(left.run_as_non_root, Some(true));
        assert!(warnings.is_empty(), "{warnings:?}");
        let (_, warnings) = security(&none, json!({"securityContext": {"runAsUser": 0}}));
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("runs as root") && w.contains("--proxy-uid")),
            "{warnings:?}"
        );
        // With a fixed UID the pod's root user does not reach the proxy: no warning.
        let (_, warnings) = security(
            &InjectorConfig::default(),
            json!({"securityContext": {"runAsUser": 0}}),
        );
        assert!(
            !warnings.iter().any(|w| w.contains("runs as root")),
            "{warnings:?}"
        );
    }

    /// A classic sidecar ends with its app only in a pod that runs once, can share its process
    /// namespace and has not refused to; each other case keeps the /shutdown warning, saying why.
    #[test]
    fn a_classic_sidecar_exits_with_the_app_only_where_it_can() {
        let asks = [
            (OUTBOUND, "15701=svc:8443"),
            (crate::annotations::SIDECAR_MODE, "classic"),
        ];
        let run = |spec: serde_json::Value| {
            let outcome = inject(
                &pod(&asks, &[], spec),
                &InjectorConfig::default(),
                &Context::default(),
            );
            let Decision::Inject { pod, plan } = outcome.decision else {
                panic!("not injected: {:?}", outcome.decision);
            };
            let spec = pod.spec.unwrap();
            let env = spec.containers[0].env.clone().unwrap_or_default();
            let exits = env
                .iter()
                .any(|e| e.name == "GEMBOK_EXIT_WITH_APP" && e.value.as_deref() == Some("true"));
            assert_eq!(exits, plan.exit_with_app);
            (
                exits,
                spec.share_process_namespace,
                outcome.warnings.join("\n"),
            )
        };

        let (exits, shared, warnings) = run(json!({"restartPolicy": "Never"}));
        assert!(exits);
        assert_eq!(shared, Some(true));
        assert!(
            warnings.contains("sets shareProcessNamespace: true"),
            "{warnings}"
        );
        assert!(!warnings.contains("/shutdown when done"), "{warnings}");

        for (spec, why) in [
            (
                json!({"restartPolicy": "OnFailure"}),
                "restarts a failed app",
            ),
            (
                json!({"restartPolicy": "Never", "hostPID": true}),
                "node's PID namespace",
            ),
            (
                json!({"restartPolicy": "Never", "shareProcessNamespace": false}),
                "turns process-namespace sharing off",
            ),
        ] {
            let (exits, shared, warnings) = run(spec.clone());
            assert!(!exits, "{spec}");
            assert_ne!(shared, Some(true), "{spec}");
            assert!(warnings.contains(why), "{spec}: {warnings}");
            assert!(
                warnings.contains("/shutdown when done"),
                "{spec}: {warnings}"
            );
        }

        // A long-running pod, and a native sidecar (the kubelet stops it with the app): nothing.
        let (exits, shared, warnings) = run(json!({}));
        assert!(!exits && shared.is_none(), "{warnings}");
        let native = [asks[0], (crate::annotations::SIDECAR_MODE, "native")];
        let outcome = inject(
            &pod(&native, &[], json!({"restartPolicy": "Never"})),
            &InjectorConfig::default(),
            &Context::default(),
        );
        let Decision::Inject { pod, plan } = outcome.decision else {
            panic!("not injected");
        };
        assert!(!plan.exit_with_app);
        assert_eq!(pod.spec.unwrap().share_process_namespace, None);
    }
}
