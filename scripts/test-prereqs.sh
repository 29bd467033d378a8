#!/usr/bin/env bash
# System packages the test suite needs beyond Python: kubectl (k8s manifests,
# usually present) and Debian's chromium (the web leaderboard's browser test).
# Installed only when missing and when we are root; otherwise those tests skip
# with a reason.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "could not install chromium: browser tests will skip" >&2
  fi
fi
