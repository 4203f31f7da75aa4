#!/usr/bin/env bash
# Installs what the injector's tests need beyond Rust: the Python packages of
# ../shared/k8s/validate-manifests (golden outputs are validated strictly), plus curl and
# coreutils' base64 for the black-box tests. Idempotent: does nothing when all is present.
set -euo pipefail

packages=('kubernetes-validate==1.37.0' 'jsonschema==4.26.0' 'PyYAML==6.0.4' 'cel-python==0.5.0')

if ! python3 - <<'PY' 2>/dev/null
import importlib.metadata as m
wanted = {"kubernetes-validate": "1.37.0", "jsonschema": "4.26.0", "PyYAML": "6.0.4", "cel-python": "0.5.0"}
raise SystemExit(any(m.version(name) != version for name, version in wanted.items()))
PY
then
    # Debian's Python refuses system-wide pip installs without this flag (PEP 668).
    python3 -m pip install --quiet --break-system-packages "${packages[@]}" 2>/dev/null \
        || python3 -m pip install --quiet "${packages[@]}"
fi

missing=()
for tool in curl base64 kill; do
    type -P "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq curl coreutils procps >/dev/null
fi
