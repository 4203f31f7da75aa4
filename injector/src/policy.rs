//! Whether a pod gets the sidecar at all: the reasons to leave it alone, checked before any
//! annotation is read. Each reason is a variant (not a bool) so metrics, warnings and `--explain`
//! all say the same thing.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use crate::annotations::{INJECT_LABEL, STATUS};
use crate::sidecar::{CONTAINER_NAME, VOLUME_NAME, proxy_container};

/// Why a pod is left unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Label `gembok.io/inject: "false"`.
    OptedOut,
    /// `hostNetwork: true`: the proxy's ports would bind on the node.
    HostNetwork,
    /// `gembok.io/status` is present: injected before (re-invocation, or `inject` run twice).
    AlreadyInjected,
    /// A container or volume already uses one of the injector's names.
    NameTaken(String),
    /// Neither `gembok.io/inbound` nor `gembok.io/outbound`: the proxy would have nothing to do.
    NothingToEncrypt,
    /// Annotated, but the pod (or template) has no `spec`: no containers to run the proxy beside.
    NoSpec,
}

impl SkipReason {
    /// Stable value for the `reason` label of `gembok_injector_skipped_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::HostNetwork => "host_network",
            Self::AlreadyInjected => "already_injected",
            Self::NameTaken(_) => "name_taken",
            Self::NothingToEncrypt => "nothing_to_encrypt",
            Self::NoSpec => "no_spec",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OptedOut => write!(
                f,
                "the pod opts out with the label {INJECT_LABEL}=\"false\""
            ),
            Self::HostNetwork => {
                write!(
                    f,
                    "the pod uses hostNetwork; the proxy's ports would bind on the node"
                )
            }
            Self::AlreadyInjected => write!(f, "already injected ({STATUS} is set)"),
            Self::NameTaken(what) => write!(
                f,
                "{what} is already in the pod and not known as the sidecar's ({STATUS} with \
                 the {CONTAINER_NAME} container); remove it or opt out"
            ),
            Self::NothingToEncrypt => write!(
                f,
                "neither gembok.io/inbound nor gembok.io/outbound is set; nothing to encrypt"
            ),
            Self::NoSpec => write!(
                f,
                "the pod has no spec, so there is no container to run the proxy beside"
            ),
        }
    }
}

/// Injector-wide policy for a pod with neither `gembok.io/inbound` nor `gembok.io/outbound`
/// (`--unannotated-pods`): allow it unchanged with a warning, or refuse it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unannotated {
    /// Allow the pod without a sidecar, with a warning (the default: the namespace label alone
    /// does not break workloads that have not been annotated yet).
    #[default]
    Skip,
    /// Deny the pod, naming the annotations to add: no pod in an enabled namespace runs without
    /// its sidecar unless it opts out with the label.
    Deny,
}

impl Unannotated {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Deny => "deny",
        }
    }
}

impl std::str::FromStr for Unannotated {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Self::Skip),
            "deny" => Ok(Self::Deny),
            other => Err(format!("{other:?} is not skip or deny")),
        }
    }
}

/// Why an unannotated pod is refused under [`Unannotated::Deny`], and what to add.
pub fn unannotated_denied() -> String {
    format!(
        "neither gembok.io/inbound nor gembok.io/outbound is set, and this injector refuses pods \
         it would leave unencrypted (--unannotated-pods deny): add the annotation \
         gembok.io/inbound: \"TLSPORT=APPPORT\" to accept mTLS, gembok.io/outbound: \
         \"LOCALPORT=HOST:PORT\" to originate it, or the label {INJECT_LABEL}: \"false\" to run \
         the pod without the sidecar"
    )
}

fn has_status(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS))
}

/// Why the pod's `gembok.io/status` does not make it injected: it is set, but no container is
/// the proxy. `None` when it is not set, or the proxy is there.
pub fn stale_status(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    (has_status(pod) && proxy_container(spec).is_none()).then(|| {
        format!(
            "{STATUS} is set but the pod has no {CONTAINER_NAME} container (edited out, or \
             copied without it): injected again"
        )
    })
}

/// Reasons that do not need the annotations, in the order they are checked.
pub fn precheck(pod: &Pod) -> Option<SkipReason> {
    let meta = &pod.metadata;
    if meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT_LABEL))
        .map(String::as_str)
        == Some("false")
    {
        return Some(SkipReason::OptedOut);
    }
    let spec = pod.spec.as_ref()?;
    // Injected means the sidecar is there: a pod marked injected whose container was edited out
    // (or copied without it) is injected again, not let through in plaintext.
    if has_status(pod) && proxy_container(spec).is_some() {
        return Some(SkipReason::AlreadyInjected);
    }
    if spec.host_network == Some(true) {
        return Some(SkipReason::HostNetwork);
    }
    if proxy_container(spec).is_some() {
        return Some(SkipReason::NameTaken(format!(
            "a container named {CONTAINER_NAME}"
        )));
    }
    if spec.volumes.iter().flatten().any(|v| v.name == VOLUME_NAME) {
        return Some(SkipReason::NameTaken(format!(
            "a volume named {VOLUME_NAME}"
        )));
    }
    None
}
