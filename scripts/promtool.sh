#!/usr/bin/env bash
# Runs Prometheus's `promtool` (the alert rules' checks in tests/unit/test_monitoring.py), taking it
# from Debian's `prometheus` package the first time: the package is downloaded and only promtool is
# unpacked (into $CHAT_SERVICES_HOME/promtool, as scripts/services.sh keeps its state), so no
# Prometheus server is installed or started. Idempotent; quick once unpacked. A promtool on PATH wins.
#
#   scripts/promtool.sh check rules docker/prometheus/alerts.yml
#   scripts/promtool.sh --version        (make promtool: fetch it if needed)
set -euo pipefail

CACHE="${CHAT_SERVICES_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-services}"
DIR="$CACHE/promtool"
TOOL="$DIR/usr/bin/promtool"

fail() { printf 'promtool.sh: %s\n' "$*" >&2; exit 1; }

if command -v promtool >/dev/null; then
  exec promtool "$@"
fi
if [ ! -x "$TOOL" ]; then
  command -v apt-get >/dev/null || fail "no promtool on PATH and no apt-get to fetch Debian's prometheus package"
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/promtool.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # The package lists may be missing (a fresh image) or stale: update them once and try again.
  if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1) || fail "apt-get download prometheus failed"
  fi
  mkdir -p "$tmp/root"
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp/root" ./usr/bin/promtool \
    || fail "could not unpack promtool from $(ls "$tmp"/prometheus_*.deb)"
  "$tmp/root/usr/bin/promtool" --version >/dev/null 2>&1 || fail "the unpacked promtool does not run"
  rm -rf "$DIR"
  mv "$tmp/root" "$DIR"
fi
exec "$TOOL" "$@"
