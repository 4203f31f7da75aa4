#!/usr/bin/env bash
# Gembok's local demo (README.md, command 1): builds the binaries and runs gembok-demo, which
# generates a development PKI, starts an app stand-in with an inbound and an outbound
# gembok-proxy, pushes verified traffic through the encrypted pair and prints what it did.
# Needs only this machine's Rust toolchain and a C compiler. Pass --hold to keep it running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet --locked -p gembok-proxy -p gembok-tests --bins
exec target/debug/gembok-demo "$@"
