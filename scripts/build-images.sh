#!/usr/bin/env bash
# `make images-cpu` / `make images-gpu`: build Dockerfile / Dockerfile.gpu with
# buildah (no container runtime, no daemon), tagged localhost/mfr-platform[-gpu]:VERSION
# and labelled with the commit. Both Dockerfiles start from Python 3.11 on Debian
# bookworm: the official python:3.11-slim-bookworm when a registry answers,
# otherwise an equivalent base built here with debootstrap from Debian's packages
# (docs/images.md).
#
#   scripts/build-images.sh cpu|gpu
#   MFR_BASE_IMAGE=IMAGE scripts/build-images.sh cpu   # use this base, pull nothing
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:?usage: scripts/build-images.sh cpu|gpu}
case "$kind" in
  cpu) dockerfile=Dockerfile; name=mfr-platform ;;
  gpu) dockerfile=Dockerfile.gpu; name=mfr-platform-gpu ;;
  *) echo "build-images: unknown kind '$kind' (cpu or gpu)" >&2; exit 2 ;;
esac

OFFICIAL_BASE=docker.io/library/python:3.11-slim-bookworm
LOCAL_BASE=localhost/mfr-base:bookworm-python3.11
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

step() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

if ! command -v buildah >/dev/null 2>&1; then
  fail "buildah is not installed. On Debian or Ubuntu: apt-get install buildah
(Fedora: dnf install buildah). It builds the Dockerfiles without a daemon."
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then revision="$revision-dirty"; fi
tag="localhost/$name:$version"

# The base: official if it can be pulled, else the local one (built once, kept).
build_local_base() {
  command -v debootstrap >/dev/null 2>&1 \
    || fail "step 'base': $OFFICIAL_BASE cannot be pulled and debootstrap is not installed
to build an equivalent base. Install it (apt-get install debootstrap) or set
MFR_BASE_IMAGE to a Python 3.11 bookworm image this machine has."
  [ "$(id -u)" = 0 ] || fail "step 'base': debootstrap needs root (run make images as root)"
  local rootfs
  rootfs=$(mktemp -d /var/tmp/mfr-base.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  step "base: debootstrap Debian bookworm + Python 3.11 from $DEBIAN_MIRROR (about 2 minutes)"
  if ! debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1; then
    tail -n 5 "$rootfs.log" >&2
    fail "step 'base': debootstrap of bookworm from $DEBIAN_MIRROR failed (log: $rootfs.log)"
  fi
  rm -f "$rootfs.log"
  # As the official image: updates and security in the sources, no apt lists kept.
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  local container mount
  container=$(buildah from scratch)
  mount=$(buildah mount "$container")
  cp -a "$rootfs/." "$mount/"
  buildah umount "$container" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="Debian bookworm + Python 3.11 (debootstrap), for $OFFICIAL_BASE" \
    "$container"
  buildah commit --quiet --rm "$container" "$LOCAL_BASE" >/dev/null
  step "base: $LOCAL_BASE built"
}

if [ -n "${MFR_BASE_IMAGE:-}" ]; then
  base=$MFR_BASE_IMAGE
elif buildah inspect --type image "$OFFICIAL_BASE" >/dev/null 2>&1; then
  base=$OFFICIAL_BASE
elif pull_error=$(buildah pull --quiet "$OFFICIAL_BASE" 2>&1 >/dev/null); then
  base=$OFFICIAL_BASE
else
  step "base: $OFFICIAL_BASE cannot be pulled (${pull_error##*: }); using an equivalent base"
  buildah inspect --type image "$LOCAL_BASE" >/dev/null 2>&1 || build_local_base
  base=$LOCAL_BASE
fi

# Where the network re-signs TLS (a proxy's CA in SSL_CERT_FILE), the build
# trusts that CA through a build secret: it is never written into a layer.
secret=()
if [ -n "${SSL_CERT_FILE:-}" ] && [ -r "$SSL_CERT_FILE" ]; then
  secret=(--secret "id=build-ca,src=$SSL_CERT_FILE")
fi

step "build: $tag from $dockerfile on $base (revision $revision)"
started=$(date +%s)
buildah bud --isolation chroot --layers \
  -f "$dockerfile" -t "$tag" \
  --build-arg "BASE_IMAGE=$base" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.title=$name" \
  --label "org.opencontainers.image.description=MFR platform, $kind image" \
  --label "org.opencontainers.image.base.name=$base" \
  "${secret[@]}" . >&2 \
  || fail "step 'build': buildah bud -f $dockerfile failed (the output above says where)"
size=$(buildah images --format '{{.Size}}' "$tag" | head -n 1)
step "built $tag in $(( $(date +%s) - started )) s, $size"
echo "$tag"
