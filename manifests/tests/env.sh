# Sourced by setup.sh and run.sh: where things are. Every path can be overridden from the environment.
repo_top="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
export GEMBOK_REPO="${GEMBOK_REPO:-$repo_top}"
export GEMBOK_SHARED="${GEMBOK_SHARED:-$repo_top/../shared}"
export GEMBOK_MANIFESTS_CACHE="${GEMBOK_MANIFESTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gembok/manifests-tests}"
