#!/usr/bin/env bash
# Gembok's local demo (README.md, command 1): builds the binaries and runs gembok-demo, which
# generates a development PKI, starts an app stand-in with an inbound and an outbound
# gembok-proxy, pushes verified traffic through the encrypted pair and prints what it did.
# Needs this machine's Rust toolchain (1.88 or later), a C compiler and make (jemalloc and
# aws-lc are built from source). Pass --hold to keep it running, --help for the options.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Everything missing at once, before a build that would fail minutes in.
missing=()
for tool in cargo rustc cc make; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if command -v rustc >/dev/null; then
  need="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)"
  have="$(rustc --version | awk '{print $2}')"
  if [ "$(printf '%s\n%s\n' "$need" "${have%%-*}" | sort -V | head -n1)" != "$need" ]; then
    missing+=("rustc $need or later (found $have; https://rustup.rs)")
  fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "demo.sh: missing: ${missing[*]}" >&2
  echo "demo.sh: on Debian or Ubuntu: apt-get install build-essential, then Rust from https://rustup.rs" >&2
  exit 69 # EX_UNAVAILABLE
fi

echo "building gembok-proxy and the demo (the first build takes a few minutes)..." >&2
cargo build --quiet --locked -p gembok-proxy -p gembok-tests --bins
# cargo run finds the binary wherever CARGO_TARGET_DIR or build.target-dir put it.
exec cargo run --quiet --locked -p gembok-tests --bin gembok-demo -- "$@"
