//! Coexistence with Istio's sidecar. When Istio also injects the pod, its iptables rules would
//! capture Gembok's TLS listeners and outbound connections and run them through Envoy a second
//! time (double encryption, two CAs, kubelet probes to the admin port refused under STRICT mTLS).
//! Istio's own per-pod annotations exclude ports from capture; the injector adds Gembok's ports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

pub const STATUS: &str = "sidecar.istio.io/status";
pub const INJECT: &str = "sidecar.istio.io/inject";
pub const REV_LABEL: &str = "istio.io/rev";
pub const NAMESPACE_LABEL: &str = "istio-injection";
pub const EXCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const EXCLUDE_OUTBOUND: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// Ports Istio's sidecar uses for itself; Gembok's ports must stay out of this range.
pub const RESERVED: std::ops::RangeInclusive<u16> = 15000..=15090;

/// Why the pod counts as Istio-injected, for the warning.
pub fn detect(pod: &Pod, namespace_istio: bool) -> Option<String> {
    let labels = pod.metadata.labels.as_ref();
    let annotations = pod.metadata.annotations.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    // Istio honours an explicit opt-out on the pod over any namespace setting.
    if label(INJECT) == Some("false") || annotation(INJECT) == Some("false") {
        return None;
    }
    if annotation(STATUS).is_some() {
        Some(format!("pod has {STATUS}"))
    } else if label(INJECT) == Some("true") {
        Some(format!("pod label {INJECT}=true"))
    } else if label(REV_LABEL).is_some_and(|r| !r.is_empty()) {
        Some(format!("pod label {REV_LABEL}"))
    } else if namespace_istio {
        Some("namespace is Istio-injected".to_owned())
    } else {
        None
    }
}

/// Istio's iptables init container (absent with Istio CNI, which reads the annotations later).
pub const INIT_CONTAINER: &str = "istio-init";

/// Whether Istio already rendered its iptables init container, whose arguments were computed
/// from the exclusion annotations as they were then.
pub fn init_rendered(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == INIT_CONTAINER))
}

/// Adds `ports` to a comma-separated port list annotation, keeping what is there.
/// Returns the ports that were added.
pub fn exclude_ports(
    annotations: &mut BTreeMap<String, String>,
    key: &str,
    ports: &[u16],
) -> Vec<u16> {
    let existing = annotations.get(key).cloned().unwrap_or_default();
    let mut list: Vec<String> = existing
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if list.iter().any(|p| p == "*") {
        return vec![];
    }
    let mut added = Vec::new();
    for port in ports {
        let text = port.to_string();
        if !list.contains(&text) {
            list.push(text);
            added.push(*port);
        }
    }
    if !added.is_empty() {
        annotations.insert(key.to_owned(), list.join(","));
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        Pod {
            metadata: ObjectMeta {
                labels: map(labels),
                annotations: map(annotations),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn detects_each_signal_and_honours_the_pod_opt_out() {
        assert!(detect(&pod(&[], &[(STATUS, "{}")]), false).is_some());
        assert!(detect(&pod(&[(INJECT, "true")], &[]), false).is_some());
        assert!(detect(&pod(&[(REV_LABEL, "1-30")], &[]), false).is_some());
        assert!(detect(&pod(&[], &[]), true).is_some());
        assert!(detect(&pod(&[], &[]), false).is_none());
        assert!(detect(&pod(&[(INJECT, "false")], &[]), true).is_none());
    }

    #[test]
    fn merges_ports_into_an_existing_list_once() {
        let mut a = BTreeMap::from([(EXCLUDE_INBOUND.to_owned(), "15020, 9000".to_owned())]);
        assert_eq!(
            exclude_ports(&mut a, EXCLUDE_INBOUND, &[8443, 9000]),
            [8443]
        );
        assert_eq!(a[EXCLUDE_INBOUND], "15020,9000,8443");
        assert!(exclude_ports(&mut a, EXCLUDE_INBOUND, &[8443]).is_empty());
        assert_eq!(a[EXCLUDE_INBOUND], "15020,9000,8443");
    }
}
