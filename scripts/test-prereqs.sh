#!/usr/bin/env bash
# System packages the tests need beyond Python, installed only when missing and
# when we are root (otherwise the tests that need them skip with a reason):
#   scripts/test-prereqs.sh          kubectl (usually present) and Debian's chromium
#                                    (the web leaderboard's browser test)
#   scripts/test-prereqs.sh images   buildah and debootstrap (make images, the images tier)
set -euo pipefail
case "${1:-suite}" in
  suite) wanted=(chromium:chromium) ;;
  images) wanted=(buildah:buildah debootstrap:debootstrap) ;;
  *) echo "test-prereqs: unknown set '$1' (suite or images)" >&2; exit 2 ;;
esac
missing=()
for pair in "${wanted[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's ${missing[*]} for the tests..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "could not install ${missing[*]}: the tests that need them will skip" >&2
else
  echo "missing ${missing[*]} (apt-get install ${missing[*]}): the tests that need them will skip" >&2
fi
