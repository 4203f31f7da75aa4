#!/usr/bin/env bash
# Installs what the manifest tests need, idempotently, into virtualenvs under a cache directory.
# Nothing is installed globally. Re-running is cheap: a venv whose stamp matches is kept.
#
#   GEMBOK_MANIFESTS_CACHE  where the venvs live (default: ${XDG_CACHE_HOME:-~/.cache}/gembok/manifests-tests)
#
# Needs: python3 (3.9+) with the venv module, kubectl (with its built-in kustomize); network
# access to PyPI on the first run only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

# Versions are pinned; the validator's are those ../shared/k8s/README.md was tested with.
VALIDATE_PKGS=('kubernetes-validate==1.37.0' 'jsonschema==4.26.0' 'PyYAML==6.0.4' 'cel-python==0.5.0')
CHECKOV_PKGS=('checkov==3.3.30')

make_venv() { # name packages...
  local dir="$GEMBOK_MANIFESTS_CACHE/$1"; shift
  local stamp="$dir/.gembok-stamp" want="$*"
  if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup: $dir is up to date"
    return
  fi
  echo "setup: creating $dir ($want)"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  printf '%s' "$want" >"$stamp"
}

command -v kubectl >/dev/null || { echo "setup: kubectl is required (with built-in kustomize)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "setup: python3 is required" >&2; exit 2; }
python3 -c 'import venv, ensurepip' 2>/dev/null || {
  echo "setup: python3's venv module is missing (Debian/Ubuntu: apt-get install -y python3-venv)" >&2; exit 2; }
mkdir -p "$GEMBOK_MANIFESTS_CACHE"
make_venv validate "${VALIDATE_PKGS[@]}"
make_venv checkov "${CHECKOV_PKGS[@]}"
[[ -f "$GEMBOK_SHARED/k8s/validate-manifests" ]] || {
  echo "setup: $GEMBOK_SHARED/k8s/validate-manifests not found (set GEMBOK_SHARED)" >&2; exit 2; }
echo "setup: done"
