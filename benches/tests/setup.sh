#!/usr/bin/env bash
# Idempotent set-up for benches/tests (the smoke test): strace for the syscall scenario.
# The full benchmark installs its contenders itself (see benches/README.md).
set -euo pipefail
if ! command -v strace >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends strace
fi
