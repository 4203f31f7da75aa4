//! Injection of a typical pod by the injector's pure core (`gembok_injector::inject`): a
//! payment pod with an inbound and an outbound mapping, an app container with probes,
//! resources and a volume. Also the JSON patch the webhook returns for it.

use criterion::{Criterion, criterion_group, criterion_main};
use gembok_injector::{Context, Decision, InjectorConfig, inject};
use k8s_openapi::api::core::v1::Pod;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: payment-7d9f8b6c5d-x2x4z
  namespace: ecommerce
  labels:
    app.kubernetes.io/name: payment
  annotations:
    gembok.io/inbound: "8443=8080"
    gembok.io/outbound: "15701=auth.ecommerce.svc.cluster.local:8443;15702=recommendation.ecommerce.svc.cluster.local:8443"
    gembok.io/allowed-sans: "spiffe://cluster.local/ns/ecommerce/sa/product-catalog"
spec:
  serviceAccountName: payment
  securityContext:
    runAsNonRoot: true
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: payment
      image: registry.example.com/payment:2.4.1
      ports:
        - name: http
          containerPort: 8080
      env:
        - name: AUTH_URL
          value: http://127.0.0.1:15701
      resources:
        requests: {cpu: 200m, memory: 256Mi}
        limits: {memory: 512Mi}
      readinessProbe:
        httpGet: {path: /ready, port: 8080}
      livenessProbe:
        httpGet: {path: /live, port: 8080}
      volumeMounts:
        - name: config
          mountPath: /etc/payment
          readOnly: true
  volumes:
    - name: config
      configMap:
        name: payment-config
"#;

fn bench(c: &mut Criterion) {
    let pod: Pod = serde_yaml_ng::from_str(POD).unwrap();
    let config = InjectorConfig::default();
    let context = Context::default();
    match inject(&pod, &config, &context).decision {
        Decision::Inject { .. } => {}
        other => panic!("the typical pod must be injected: {other:?}"),
    }
    c.bench_function("inject/typical-pod", |b| {
        b.iter(|| inject(std::hint::black_box(&pod), &config, &context))
    });
    let original = serde_json::to_value(&pod).unwrap();
    c.bench_function("inject/typical-pod+json-patch", |b| {
        b.iter(|| {
            let Decision::Inject { pod: injected, .. } = inject(&pod, &config, &context).decision
            else {
                unreachable!()
            };
            let changed = serde_json::to_value(&*injected).unwrap();
            gembok_injector::patch::diff(&original, &changed)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
