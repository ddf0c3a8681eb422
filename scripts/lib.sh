# Shared helpers for scripts/*: phase timing and the build cache.
# shellcheck shell=bash

# Runs "$@" as a named phase and prints how long it took; returns its status
# (also where the caller tests it, which turns `set -e` off inside).
phase() {
  local name=$1; shift
  local start=$SECONDS status=0
  echo "==> [$name] $*" >&2
  "$@" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "==> [$name] failed (status $status) after $((SECONDS - start)) s" >&2
    return "$status"
  fi
  echo "==> [$name] done in $((SECONDS - start)) s" >&2
}

# Builds go to a target directory shared between clones on this machine,
# keyed by the digest of the toolchain (`rustc -Vv`), so CI's fresh clone
# reuses an earlier build instead of starting cold. Within one toolchain,
# cargo's own fingerprints rebuild exactly what a changed Cargo.lock or
# source touches; keying on the lock file too made every dependency change
# a cold build.
use_build_cache() {
  if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    local key
    key=$(rustc -Vv | sha256sum | cut -c1-16)
    export CARGO_TARGET_DIR="${VET_CACHE_DIR:-$HOME/.cache/vetting}/target-$key"
    mkdir -p "$CARGO_TARGET_DIR"
  fi
  echo "==> build cache: $CARGO_TARGET_DIR"
}
