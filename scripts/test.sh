#!/usr/bin/env bash
# Gembok's test command (README.md, command 2; .ci/run calls exactly this). On a fresh machine of
# this kind it installs what the tests need, then runs every test and fails if any fails:
#   1. system packages (apt) and each part's set-up (Python packages for manifest validation,
#      checkov in a virtualenv), all idempotent;
#   2. cargo fmt --check and clippy with warnings as errors;
#   3. every Rust test in the workspace (unit, golden files, the real binaries end to end, the
#      proxy's FIPS build among them, manifest consistency, the benchmark harness's smoke run),
#      and each criterion micro-benchmark once in test mode;
#   4. the manifests: kubectl kustomize, strict validation, injected output, checkov;
#   5. the kTLS data path inside qemu VMs (scripts/ktls-vm.sh), with two Debian kernels: one
#      without and one with kernel rekey (TLS 1.3 KeyUpdate).
# ../shared (beside the checkout) is used for offline manifest validation; override with
# GEMBOK_SHARED.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GEMBOK_SHARED="${GEMBOK_SHARED:-$(cd .. && pwd)/shared}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
started=$SECONDS
step() { printf '\n=== %s (%ds) ===\n' "$*" $((SECONDS - started)); }

step "system packages"
missing=()
# cmake and golang-go build AWS-LC's FIPS module (the proxy's FIPS build, tested below).
for pkg_tool in curl:curl openssl:openssl procps:kill iproute2:ss python3:python3 cmake:cmake \
  golang-go:go; do
  command -v "${pkg_tool#*:}" >/dev/null || missing+=("${pkg_tool%%:*}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
command -v kubectl >/dev/null || { echo "kubectl is required (preinstalled on this kind of machine)" >&2; exit 2; }
[[ -x $GEMBOK_SHARED/k8s/validate-manifests ]] || { echo "no $GEMBOK_SHARED/k8s/validate-manifests (set GEMBOK_SHARED)" >&2; exit 2; }

step "per-part set-up"
certs-dev/tests/setup.sh
injector/tests/setup.sh
manifests/tests/setup.sh
benches/tests/setup.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "build"
# One build of the workspace for every step below: cargo test's, which resolves features with
# the dev-dependencies', and which also builds the binaries of each package with integration
# tests (the binaries the tests run). A `cargo build --bins`, or anything with -p, resolves them
# otherwise: a second build of the whole dependency tree, which CI paid for before (the test
# build rebuilt tokio, syn, serde and all that depends on them).
cargo test --locked --workspace --no-run
target_dir=$(cargo metadata --locked --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
# The FIPS build in a target directory of its own (its aws-lc-rs links the FIPS module instead
# of the one every other binary uses); tests/tests/proxy/fips.rs runs it, and must find it.
cargo build --locked -p gembok-proxy --features fips --target-dir target/fips
export GEMBOK_TEST_FIPS=1

step "Rust tests"
cargo nextest run --locked --workspace --no-fail-fast

step "criterion micro-benchmarks, each run once (test mode) so they cannot rot"
# --workspace, not -p gembok-bench: the build above, only the benchmark targets are new.
cargo test --locked --workspace --benches

step "manifests"
# The injector built above (run.sh alone would build it with -p, another feature set).
GEMBOK_MANIFESTS_SKIP_RUST=1 GEMBOK_INJECTOR_BIN="$target_dir/debug/gembok-injector" \
  manifests/tests/run.sh

if [[ -x scripts/ktls-vm.sh ]]; then
  # Two kernels: Debian 12's (kTLS without rekey: a KeyUpdate ends the connection) and a
  # backported 6.14+ one (the kernel follows TLS 1.3 KeyUpdates).
  step "kTLS in a VM (Debian 12 kernel)"
  scripts/ktls-vm.sh
  step "kTLS in a VM (trixie-backports kernel, rekey)"
  GEMBOK_KTLS_VM_SUITE=trixie-backports scripts/ktls-vm.sh
fi

step "all tests passed"
