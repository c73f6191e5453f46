#!/usr/bin/env bash
# Makes docker.io/library/debian:12-slim from Debian's archive with debootstrap, for hosts that
# reach Debian's mirror but no container registry (CI here). Does nothing if the image exists.
# Takes ~35 s and ~200 MB (minbase is larger than Docker Hub's slim image, which strips docs).
# Needs root, podman and debootstrap.
set -euo pipefail
image=docker.io/library/debian:12-slim
if podman image exists "$image"; then exit 0; fi
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/log" 2>&1 \
  || { tail -20 "$work/log"; exit 1; }
tar -C "$work/root" -c . | podman import - "$image" >/dev/null
echo "made $image from $mirror"
