#!/usr/bin/env bash
# A local Debian base image (fedai-base:bookworm) made from Debian's archive with debootstrap and `docker import`,
# so nothing comes from a container registry. Python 3.11 (the project's floor), venv, CA certificates, wget.
# Needs root (debootstrap) and the archive (DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail

image=${FEDAI_BASE_IMAGE:-fedai-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "base image: debootstrap is not installed (infra/install-compose-tools installs it)" >&2
  exit 1
fi
if ! python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)" \
  "$mirror/dists/$suite/Release" 2>/dev/null; then
  echo "base image: Debian's archive is not reachable at $mirror (set DEBIAN_MIRROR to a mirror that is)" >&2
  exit 1
fi

root=$(mktemp -d /tmp/fedai-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,wget \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES
# services installed later (PostgreSQL, Prometheus) are not started during an image build
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
# this host's own extra CAs (e.g. a TLS-inspecting egress proxy's), trusted in the image too: pip needs them
ca_dir=${FEDAI_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
if compgen -G "$ca_dir/*.crt" >/dev/null; then
  cp "$ca_dir"/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "base image: $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
