#!/usr/bin/env bash
# Idempotent set-up for benches/tests (the smoke tests): strace for the syscall scenario, perf
# (Debian's linux-perf) for --profile, iproute2 for the run's network namespace (`ip link set lo
# up`). The full benchmark installs its contenders itself (see benches/README.md).
set -euo pipefail
missing=()
command -v strace >/dev/null || missing+=(strace)
command -v perf >/dev/null || missing+=(linux-perf)
command -v ip >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
