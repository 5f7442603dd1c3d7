#!/usr/bin/env bash
# Fetch Prometheus's promtool and prometheus for the tests of deploy/ (rule syntax and rule unit tests; the
# Grafana dashboard's queries run by a real Prometheus against a real gateway), once.
#
# Debian's prometheus package holds both: the .deb is downloaded with `apt-get download` (no install, no
# daemon, no root needed) and the two binaries are kept in ~/.cache/aigrid/promtool/, where
# tests/deploy/ looks (or on PATH). Without apt (another OS) it says so and exits 0:
# those tests then skip with a line that says why.
set -euo pipefail

DEST="$HOME/.cache/aigrid/promtool"
say() { echo "[fetch_promtool] $*"; }

if { [ -x "$DEST/promtool" ] || command -v promtool >/dev/null; } && \
   { [ -x "$DEST/prometheus" ] || command -v prometheus >/dev/null; }; then
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  say "no apt-get/dpkg-deb here: install promtool (Prometheus) yourself, or the rule tests skip"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1); then
  say "apt-get download prometheus failed (no package index? run apt-get update): the rule tests skip"
  exit 0
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
mkdir -p "$DEST"
cp "$work/x/usr/bin/promtool" "$DEST/promtool"
cp "$work/x/usr/bin/prometheus" "$DEST/prometheus"
say "promtool and prometheus $("$DEST/promtool" --version 2>&1 | head -1 | awk '{print $3}') in $DEST"
