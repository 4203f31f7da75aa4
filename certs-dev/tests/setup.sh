#!/bin/sh
# Installs what gembok-certs-dev's tests need beyond Rust: openssl and kubectl (expected on the
# machine) and the Python packages of ../shared/k8s/validate-manifests. Idempotent.
set -eu

for tool in openssl kubectl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "certs-dev/tests/setup.sh: $tool is required" >&2; exit 1; }
done

# Versions from shared/k8s/README.md.
if ! python3 -c 'import kubernetes_validate, jsonschema, yaml, celpy' >/dev/null 2>&1; then
    python3 -m pip install --quiet \
        'kubernetes-validate==1.37.0' 'jsonschema==4.26.0' 'PyYAML==6.0.4' 'cel-python==0.5.0'
fi
