#!/usr/bin/env bash
# Regenerates the DEVELOPMENT-ONLY certificate fixtures with gembok-certs-dev: one throw-away
# root, one intermediate ("dev"), a sidecar Secret per service and for the Jaeger collector
# (monitoring/jaeger, base/config/jaeger.yaml), the webhook's serving Secret and
# Redis Enterprise's proxy Secret (certs/), the revocation lists' ConfigMaps (certs/), and a
# client certificate for developers (dev-client/) with a revoked twin of the same identity
# (dev-client-revoked/). The root's key is thrown away. Run from anywhere inside the repository:
#   manifests/overlays/development/regenerate-certs.sh
# then commit certs/ and dev-client/. Never use these keys outside a development cluster.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(git -C "$here" rev-parse --show-toplevel)"
# The names of the production Certificate redis-proxy-gembok
# (base/gembok/sidecar-certificates.yaml); a test checks that the two agree.
redis_names="catalog-cache.redis.svc.cluster.local,session-store.redis.svc.cluster.local,recommendation-cache.redis.svc.cluster.local"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$top" && cargo run --quiet -p gembok-certs-dev -- \
  --out "$tmp/pki" --regions dev --days 1825 --ca-days 3650 \
  --services product-catalog,payment,recommendation,auth,monitoring/jaeger \
  --clients dev-client --revoked-clients dev-client --redis-proxy-names "$redis_names")
rm -f "$here"/certs/*.yaml
# The generator's header names its own regeneration command; these copies are regenerated here.
for f in "$tmp"/pki/k8s/dev/*.yaml; do
  sed 's|^# Regenerate (from where it was run): .*$|# Regenerate: manifests/overlays/development/regenerate-certs.sh|' \
    "$f" >"$here/certs/$(basename "$f")"
done
# The PEM files of client $1 into $1/, beside its DEVELOPMENT-ONLY.txt read from stdin.
copy_client() {
  rm -rf "${here:?}/$1"
  mkdir "$here/$1"
  cp "$tmp/pki/dev/$1"/{tls.crt,tls.key,ca.crt} "$here/$1/"
  cat >"$here/$1/DEVELOPMENT-ONLY.txt"
}
copy_client dev-client <<'EOF'
DEVELOPMENT ONLY: a client certificate for calling the development cluster's services through
their sidecars (kubectl port-forward; manifests/README.md, "Development"). Its SPIFFE ID,
spiffe://cluster.local/ns/ecommerce/sa/dev-client, is admitted in the development overlay only.
Regenerate: manifests/overlays/development/regenerate-certs.sh
EOF
copy_client dev-client-revoked <<'EOF'
DEVELOPMENT ONLY: a second client certificate of dev-client's identity
(spiffe://cluster.local/ns/ecommerce/sa/dev-client), revoked in the development revocation lists
(certs/gembok-crl.*.yaml): every sidecar of the development overlay refuses it, while it admits
dev-client/ (manifests/README.md, "Development"). It stands for a leaked key.
Regenerate: manifests/overlays/development/regenerate-certs.sh
EOF
echo "regenerated $(ls "$here"/certs | wc -l) files in $here/certs and the clients in $here/dev-client and $here/dev-client-revoked (commit all three)"
