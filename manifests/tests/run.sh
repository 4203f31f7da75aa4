#!/usr/bin/env bash
# Runs the manifest tests:
#   1. kubectl kustomize renders every overlay and cluster (and base/gembok on its own);
#   2. ../shared/k8s/validate-manifests validates every rendered object strictly, without
#      --allow-missing-schemas, for Kubernetes 1.29 and 1.30 (the shipped, native-sidecar
#      configuration needs 1.29+) and 1.25 (the oldest schemas the validator has: with
#      components/classic-sidecars the same objects run on 1.25-1.28; README "Kubernetes versions");
#   3. the rendered output goes through the real `gembok-injector inject`, configured like the
#      rendered injector Deployment (its GEMBOK_INJECTOR_* image/pull-policy settings), and is
#      validated again: native sidecars for 1.29 and 1.30, --sidecar-mode classic for 1.25. The
#      injector's stderr (warnings) is kept next to the output and summarised here;
#   4. checkov on each rendered (and injected) cluster; only checkov-skips.yaml may fail;
#   5. the Rust consistency checks (tests/tests/manifests.rs), unless GEMBOK_MANIFESTS_SKIP_RUST=1
#      (set it when the caller runs the workspace's tests anyway).
# Prints "manifests: N passed, N failed" last and exits non-zero on any failure.
#
# Environment: GEMBOK_SHARED (default <repo>/../shared), GEMBOK_MANIFESTS_CACHE (venvs, see
# setup.sh), GEMBOK_INJECTOR_BIN (default: built here with cargo), KEEP=DIR keeps the renders.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
"$here/setup.sh" >/dev/null || { echo "manifests: setup failed (run $here/setup.sh)"; exit 2; }

manifests="$GEMBOK_REPO/manifests"
py="$GEMBOK_MANIFESTS_CACHE/validate/bin/python"
checkov="$GEMBOK_MANIFESTS_CACHE/checkov/bin/checkov"
validator="$GEMBOK_SHARED/k8s/validate-manifests"
work="${KEEP:-$(mktemp -d)}"
mkdir -p "$work"
[[ -n "${KEEP:-}" ]] || trap 'rm -rf "$work"' EXIT

# tests/classic-sidecars is production with components/classic-sidecars (Kubernetes 1.25-1.28);
# tests/fips is production with components/fips (every sidecar on the proxy's FIPS build).
targets=(overlays/development overlays/staging overlays/production clusters/us clusters/eu clusters/asia
  tests/classic-sidecars tests/fips base/gembok)
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
step() { # name command...
  local name="$1"; shift
  local log="$work/log.$RANDOM"
  if "$@" >"$log" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/     /' "$log" | head -40; fi
}

# The injector binary: given, or built from this checkout.
injector="${GEMBOK_INJECTOR_BIN:-}"
if [[ -z "$injector" ]]; then
  if (cd "$GEMBOK_REPO" && cargo build --quiet -p gembok-injector); then
    injector="$(cd "$GEMBOK_REPO" && cargo metadata --format-version 1 --no-deps \
      | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/gembok-injector"
  else
    bad "cargo build -p gembok-injector"
  fi
fi

# The sidecar settings of the rendered injector Deployment, as environment for `inject` (the flags
# read the same GEMBOK_INJECTOR_* variables), so the injected output is what that injector makes.
injector_env() { # rendered.yaml
  "$py" - "$1" <<'PYEOF'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "Deployment" and d["metadata"]["name"] == "gembok-injector":
        for e in d["spec"]["template"]["spec"]["containers"][0].get("env", []):
            if e["name"] in ("GEMBOK_INJECTOR_PROXY_IMAGE", "GEMBOK_INJECTOR_PROXY_PULL_POLICY",
                             "GEMBOK_INJECTOR_PROXY_IMAGE_FIPS", "GEMBOK_INJECTOR_FIPS"):
                print(f'{e["name"]}={e["value"]}')
PYEOF
}
inject() { # mode rendered.yaml result.yaml
  local mode="$1" in="$2" res="$3" vars rc
  vars="$(injector_env "$in")" || return 1
  # shellcheck disable=SC2086 # one NAME=value word per line
  env $vars "$injector" inject --sidecar-mode "$mode" -f "$in" >"$res" 2>"$res.stderr"
  rc=$?
  cat "$res.stderr" >&2 # into the step's log, printed if the step fails
  return $rc
}
warnings() { # result.yaml: the injector's stderr of a successful run, summarised
  [[ -s "$1.stderr" ]] || return 0
  echo "     injector stderr ($(wc -l <"$1.stderr") lines; first: $(head -c 160 "$1.stderr" | head -1))"
}

for t in "${targets[@]}"; do
  out="$work/$(echo "$t" | tr / -).yaml"
  step "kustomize $t" bash -c "kubectl kustomize '$manifests/$t' > '$out'"
  for k in 1.30 1.29 1.25; do
    step "validate $t (Kubernetes $k)" "$py" "$validator" -q -k "$k" "$out"
  done
  [[ "$t" == base/gembok ]] && continue
  if [[ -n "$injector" && -x "$injector" ]]; then
    if [[ "$t" != tests/classic-sidecars ]]; then
      step "inject $t (native)" inject native "$out" "${out%.yaml}.injected.yaml"
      warnings "${out%.yaml}.injected.yaml"
      for k in 1.30 1.29; do
        step "validate injected $t (native, Kubernetes $k)" "$py" "$validator" -q -k "$k" "${out%.yaml}.injected.yaml"
      done
    fi
    step "inject $t (classic)" inject classic "$out" "${out%.yaml}.classic.yaml"
    warnings "${out%.yaml}.classic.yaml"
    step "validate injected $t (classic, Kubernetes 1.25)" "$py" "$validator" -q -k 1.25 "${out%.yaml}.classic.yaml"
  fi
done

# checkov: every cluster, as rendered and as injected (the sidecar's settings count too).
reports=()
for c in us eu asia; do
  for f in "$work/clusters-$c.yaml" "$work/clusters-$c.injected.yaml"; do
    [[ -f "$f" ]] || continue
    # Exit 1 just means findings; checkov_filter.py judges them.
    "$checkov" -f "$f" --framework kubernetes --quiet --compact --skip-download -o json >"$f.checkov.json" 2>"$f.checkov.err"
    reports+=("$f.checkov.json")
  done
done
step "checkov on ${#reports[@]} rendered clusters (skip list: checkov-skips.yaml)" \
  "$py" "$here/checkov_filter.py" "$here/checkov-skips.yaml" "${reports[@]}"

if [[ "${GEMBOK_MANIFESTS_SKIP_RUST:-0}" != 1 ]]; then
  step "rust consistency checks (cargo nextest run -p gembok-tests --test manifests)" \
    env GEMBOK_INJECTOR_BIN="$injector" bash -c "cd '$GEMBOK_REPO' && cargo nextest run --no-fail-fast -p gembok-tests --test manifests"
fi

echo "manifests: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
