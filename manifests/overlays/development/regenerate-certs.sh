#!/usr/bin/env bash
# Regenerates the DEVELOPMENT-ONLY certificate fixtures in certs/ with gembok-certs-dev:
# one throw-away root, one intermediate ("dev"), a sidecar Secret per service and the webhook's
# serving Secret. Run from anywhere inside the repository:
#   manifests/overlays/development/regenerate-certs.sh
# then commit certs/. Never use these keys outside a development cluster.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(git -C "$here" rev-parse --show-toplevel)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$top" && cargo run --quiet -p gembok-certs-dev -- \
  --out "$tmp/pki" --regions dev --days 1825 --ca-days 3650)
rm -f "$here"/certs/*.yaml
# The generator's header names its own regeneration command; these copies are regenerated here.
for f in "$tmp"/pki/k8s/dev/*.yaml; do
  sed 's|^# Regenerate from the repository root: .*$|# Regenerate: manifests/overlays/development/regenerate-certs.sh|' \
    "$f" >"$here/certs/$(basename "$f")"
done
echo "regenerated $(ls "$here"/certs | wc -l) files in $here/certs (commit them)"
