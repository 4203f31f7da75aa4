//! The webhook's AdmissionReview handling: bytes of an `admission.k8s.io/v1` AdmissionReview in,
//! the AdmissionReview to answer out. No HTTP here (see `server`), no decision (see `inject`).
//!
//! Every readable review gets an answer carrying its uid: allowed with a JSON Patch (injected),
//! allowed without one (skipped, with a warning saying why; or not a Pod CREATE), or denied
//! (annotation errors; an object that does not read as a Pod). `dryRun` needs nothing special:
//! the injector has no side effects (`sideEffects: None`).

use k8s_openapi::api::core::v1::Pod;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use thiserror::Error;

use crate::annotations::AnnotationError;
use crate::inject::{Context, Decision, InjectorConfig, inject};
use crate::patch;

/// A body that is not an AdmissionReview with a request (HTTP 400).
#[derive(Debug, Error)]
pub enum ReviewError {
    #[error("body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview apiVersion is {0:?}; only admission.k8s.io/v1 is served")]
    Version(String),
    /// Encoding our own answer failed (HTTP 500); never expected.
    #[error("cannot encode the answer: {0}")]
    Encode(String),
}

impl ReviewError {
    /// Whether the client sent something wrong (400) rather than the injector failing (500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Encode(_))
    }
}

/// How a review ended, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Injected,
    Skipped(&'static str),
    /// Denied; the reason label of `gembok_injector_rejected_total`: `invalid_annotations`,
    /// `incompatible_pod` (see [`rejection`]), or `nothing_to_encrypt` under
    /// `--unannotated-pods deny`.
    Rejected(&'static str),
    /// Not a Pod CREATE: allowed untouched.
    Ignored,
    /// Denied because the object does not read as a Pod.
    Unreadable,
}

/// The answer plus what happened.
pub struct Answer {
    pub review: AdmissionReview<DynamicObject>,
    pub result: Verdict,
    /// `namespace/name` (or `generateName`) for logs.
    pub object: String,
}

/// Handles one review body.
pub fn review(
    body: &[u8],
    config: &InjectorConfig,
    context: &Context,
) -> Result<Answer, ReviewError> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    if review.types.api_version != "admission.k8s.io/v1" {
        return Err(ReviewError::Version(review.types.api_version));
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let object = format!(
        "{}/{}",
        request.namespace.as_deref().unwrap_or_default(),
        if request.name.is_empty() {
            "(generated name)"
        } else {
            &request.name
        }
    );
    let response = AdmissionResponse::from(&request);
    let is_pod_create = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.sub_resource.is_none()
        && matches!(request.operation, Operation::Create);
    let Some(raw) = request.object.filter(|_| is_pod_create) else {
        return Ok(Answer {
            review: response.into_review(),
            result: Verdict::Ignored,
            object,
        });
    };

    let pod: Result<Pod, _> = serde_json::to_value(&raw).and_then(serde_json::from_value);
    let mut pod = match pod {
        Ok(pod) => pod,
        Err(e) => {
            let response = response.deny(format!("gembok-injector cannot read this Pod: {e}"));
            return Ok(Answer {
                review: response.into_review(),
                result: Verdict::Unreadable,
                object,
            });
        }
    };
    // Other managers' field ownership is large and never changes here; diffing it costs CPU.
    pod.metadata.managed_fields = None;
    let object = match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) if request.name.is_empty() => object.replace("(generated name)", name),
        (None, Some(prefix)) if request.name.is_empty() => {
            object.replace("(generated name)", &format!("{prefix}*"))
        }
        _ => object,
    };

    let outcome = inject(&pod, config, context);
    let mut warnings: Vec<String> = outcome
        .warnings
        .iter()
        .map(|w| format!("gembok: {w}"))
        .collect();
    let (response, result) = match outcome.decision {
        Decision::Inject { pod: injected, .. } => {
            let encode = |e: &dyn std::fmt::Display| ReviewError::Encode(e.to_string());
            let before = serde_json::to_value(&pod).map_err(|e| encode(&e))?;
            let after = serde_json::to_value(&*injected).map_err(|e| encode(&e))?;
            let response = response
                .with_patch(patch::diff(&before, &after))
                .map_err(|e| encode(&e))?;
            (response, Verdict::Injected)
        }
        Decision::Skip(reason) => {
            // A pod injected already comes back whenever a later webhook changes it
            // (reinvocationPolicy IfNeeded): nothing to say then.
            if !matches!(reason, crate::policy::SkipReason::AlreadyInjected) {
                warnings.insert(0, format!("gembok: sidecar not injected: {reason}"));
            }
            (response, Verdict::Skipped(reason.label()))
        }
        Decision::Reject(errors) => {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let message = format!("gembok-injector refuses this pod: {}", list.join("; "));
            (
                response.deny(message),
                Verdict::Rejected(rejection(&errors)),
            )
        }
        Decision::Deny(why) => {
            let message = format!("gembok-injector refuses this pod: {why}");
            (
                response.deny(message),
                Verdict::Rejected("nothing_to_encrypt"),
            )
        }
    };
    let mut response = response;
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    Ok(Answer {
        review: response.into_review(),
        result,
        object,
    })
}

/// The reason label of a refused pod: `incompatible_pod` when something no annotation can change
/// is at fault (a Windows pod, a container on the admin port), so that a dashboard tells a
/// workload the sidecar cannot serve from a typo in an annotation; `invalid_annotations`
/// otherwise.
pub fn rejection(errors: &[AnnotationError]) -> &'static str {
    if errors.iter().all(|e| e.key().is_some()) {
        "invalid_annotations"
    } else {
        "incompatible_pod"
    }
}

/// The review as JSON for the API server. kube-core serialises `patch` (`[]byte` in Go) as an
/// array of numbers; the API documents base64 (standard alphabet, padded), which is what Go's
/// encoder writes and what every client expects, so it is rewritten here.
pub fn to_wire(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine as _;
    let mut value = serde_json::to_value(review)?;
    if let Some(patch) = value.pointer_mut("/response/patch")
        && let Some(numbers) = patch.as_array()
    {
        let bytes: Vec<u8> = numbers
            .iter()
            .filter_map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect();
        *patch = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&value)
}
